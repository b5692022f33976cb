"""Text vectors for evaluation: the encoder, started only when needed, and an on-disk cache.

Encoding a catalog takes minutes on CPU, and an evaluation encodes the same texts on every
run, so vectors are cached as ``<cache_dir>/<stem>-<sha256(model_id)[:12]>.npy`` with a JSON
sidecar recording the model and a digest of the texts; any change (a new text template, new
items, another model) re-encodes and overwrites.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from offline.progress import progress_bar
from portrait.events import Event, event_text
from portrait.keywords import TextFeatureBatch
from portrait.ports import Encoder, TextFeatures
from portrait.prompts import NO_PROMPTS, TextPrompts, prompts_of

ENCODE_BATCH = 512


class EncoderProvider:
    """The encoder, started only on a cache miss.

    Args:
        encoder: an encoder to use instead of starting vLLM (tests pass a deterministic one).
    """

    def __init__(self, encoder: Encoder | None = None, settings: Any = None) -> None:
        self._encoder = encoder
        self._settings: Any = settings
        self.started_seconds: float | None = None
        if encoder is None and settings is None:
            from encoding.settings import EncoderSettings

            self._settings = EncoderSettings()

    @property
    def settings(self) -> Any:
        """The vLLM encoder's settings (None when a given encoder is used instead)."""
        return self._settings

    @property
    def model_id(self) -> str:
        """The model the vectors come from, known without starting the encoder."""
        return self._encoder.model_id if self._encoder is not None else self._settings.model_id

    @property
    def prompts(self) -> TextPrompts:
        """The model's prefixes, known without starting the encoder. They are applied before
        :func:`cached_encode`, so the cache's text digest covers them."""
        if self._encoder is not None:
            return prompts_of(self._encoder)
        return self._settings.prompts if self._settings is not None else NO_PROMPTS

    def get(self) -> Encoder:
        """The encoder, started on first use."""
        if self._encoder is None:
            from encoding.vllm_encoder import VllmEncoder

            t0 = time.perf_counter()
            self._encoder = VllmEncoder(self._settings).start()
            self.started_seconds = time.perf_counter() - t0
        return self._encoder

    def describe(self) -> dict[str, Any]:
        """Model, class, dtype, device and start time, for the report."""
        enc = self._encoder
        return {
            "model_id": self.model_id,
            "class": type(enc).__name__ if enc is not None else "VllmEncoder (not started)",
            "dtype": getattr(enc, "dtype", None)
            or (self._settings.dtype if self._settings else None),
            "device": getattr(enc, "device", None),
            "start_seconds": self.started_seconds,
        }


def _digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def cached_encode(
    texts: Sequence[str],
    provider: EncoderProvider,
    cache_dir: Path | None,
    stem: str,
    progress: bool = True,
    label: str = "encode",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors of ``texts``, from the cache when it holds exactly these texts and this model.

    Args:
        texts: the texts, in the order of the returned rows.
        provider: the encoder (started only on a miss).
        cache_dir: the cache folder; ``None`` encodes without caching.
        stem: the cache file's name stem (the dataset's name).
        progress: show a progress bar while encoding.
        label: the bar's label.

    Returns:
        The ``(len(texts), dim)`` float32 matrix, and what the sidecar records plus ``cache``
        (``"hit"`` or ``"miss"``) and ``path``.
    """
    model_hash = hashlib.sha256(provider.model_id.encode()).hexdigest()[:12]
    digest = _digest(texts)
    path = sidecar = None
    if cache_dir is not None:
        path = cache_dir / f"{stem}-{model_hash}.npy"
        sidecar = path.with_suffix(".json")
        if path.exists() and sidecar.exists():
            meta = json.loads(sidecar.read_text())
            if meta.get("texts_sha256") == digest and meta.get("model_id") == provider.model_id:
                return np.load(path), {**meta, "cache": "hit", "path": str(path)}
    t0 = time.perf_counter()
    encoder = provider.get()
    chunks = []
    bar = progress_bar(len(texts), label, "text") if progress else None
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = list(texts[start : start + ENCODE_BATCH])
        chunks.append(np.asarray(encoder.encode(batch), dtype=np.float32))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    matrix = np.vstack(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    meta = {
        "model_id": provider.model_id,
        "texts_sha256": digest,
        "n": len(texts),
        "dim": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
        "encoder": provider.describe(),
        "encode_seconds": time.perf_counter() - t0,
    }
    if path is not None and sidecar is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, matrix)
        sidecar.write_text(json.dumps(meta, indent=2))
    return matrix, {**meta, "cache": "miss", "path": str(path) if path else None}


def text_event_features(
    events: Sequence[Event], provider: EncoderProvider, cache_dir: Path | None, stem: str
) -> tuple[dict[str, TextFeatures], dict[str, Any]]:
    """Vectors and keywords of every review and search, keyed by event id (cached).

    Returns:
        The features by event id, and :func:`cached_encode`'s record (``{"n": 0}`` when no
        event has text).
    """
    text_events = [(e.event_id, text) for e in events if (text := event_text(e))]
    if not text_events:
        return {}, {"n": 0}
    batch = TextFeatureBatch([t for _, t in text_events])
    vectors, info = cached_encode(provider.prompts.queries(batch.inputs), provider, cache_dir,
                                  stem, label="text events")
    # Under the provider's model id, as its item vectors are: profiles compose text only in
    # an item space of the encoder that made it.
    feats = batch.assemble(vectors, provider.model_id)
    return {eid: f for (eid, _), f in zip(text_events, feats, strict=True)}, info
