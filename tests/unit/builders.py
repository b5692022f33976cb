"""Small deterministic builders for domain unit tests: a catalog, text features, events."""

from __future__ import annotations

import hashlib

import numpy as np

from portrait.events import Event, RecordedEvent
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import TextFeatures

DIM = 16
GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi")


def catalog(n: int = 30, dim: int = DIM, seed: int = 7) -> ItemIndex:
    """``n`` items with random unit vectors and one to three genres each."""
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(n)]
    tags = [tuple(GENRES[(k + j) % len(GENRES)] for j in range(1 + k % 3)) for k in range(n)]
    return ItemIndex(ids, l2_normalise(rng.normal(size=(n, dim))), tags, model_id="test")


def text_features(text: str, dim: int = DIM) -> TextFeatures:
    """A unit vector seeded by the text, and its words as keywords (score 1/len)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vec = l2_normalise(np.random.default_rng(seed).normal(size=(1, dim)))[0]
    words = sorted(set(text.lower().split()))
    return TextFeatures(vec, tuple((w, 1.0 / len(words)) for w in words))


def recorded(events: list[Event], start_seq: int = 1) -> list[RecordedEvent]:
    """Events as a log would record them, in the given (arrival) order."""
    return [
        RecordedEvent(seq=start_seq + i, position=start_seq + i, recorded_at=0.0, event=e)
        for i, e in enumerate(events)
    ]
