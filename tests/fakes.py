"""Test doubles for the ports that live outside the domain."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence

import numpy as np

from encoding.vllm_encoder import validate_texts

_WORD = re.compile(r"\w+", re.UNICODE)


class HashingEncoder:
    """A deterministic ``Encoder``: a bag of hashed, lower-cased word tokens, L2-normalised.

    Texts sharing words get similar vectors, which is all the fold's unit tests need. Each
    word adds +1 or -1 (a second hash bit) to one of ``dim`` buckets; a text whose words
    cancel out falls back to its own hashed bucket so no vector is zero. ``max_words``
    truncates long texts, as the real encoder's token window does.
    """

    def __init__(self, dim: int = 32, model_id: str = "test/hashing-encoder",
                 max_words: int = 256) -> None:
        if dim < 2:
            raise ValueError("dim must be >= 2")
        self._dim = dim
        self._model_id = model_id
        self._max_words = max_words
        self.calls: list[list[str]] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        items = validate_texts(texts)  # the real adapter's checks, so tests see the same errors
        self.calls.append(items)
        out = np.zeros((len(items), self._dim), dtype=np.float32)
        for row, text in enumerate(items):
            words = _WORD.findall(text.lower())[: self._max_words]
            for w in words:
                bucket, sign = self._hash(w)
                out[row, bucket] += sign
            if not np.any(out[row]):
                out[row, self._hash(text)[0]] = 1.0
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def _hash(self, token: str) -> tuple[int, float]:
        h = int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")
        return h % self._dim, (1.0 if (h >> 32) & 1 else -1.0)


class SlowEncoder(HashingEncoder):
    """A ``HashingEncoder`` that spends ``seconds_per_text`` per text, like a busy engine, so
    that texts pile up in front of it."""

    def __init__(self, seconds_per_text: float = 0.01, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._seconds_per_text = seconds_per_text

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        time.sleep(self._seconds_per_text * len(texts))
        return super().encode(texts)


def slow_encoder_factory(settings: object) -> SlowEncoder:
    """An ``EncoderFactory`` for the encoder deployment (importable, so Ray can ship it)."""
    return SlowEncoder()
