"""Small deterministic builders for domain unit tests: a catalog, text features, events,
profiles replayed from them and a comparison of two profiles."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pytest

from portrait.collaborative import combine
from portrait.config import ProfileConfig
from portrait.events import Event, RecordedEvent, event_text
from portrait.fold import replay
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import TextFeatures
from portrait.profile import ProfileState

DIM = 16
# The encoder every builder's item and text vectors are said to come from.
MODEL = "test"
GENRES = ("action", "comedy", "drama", "horror", "romance", "scifi")


def catalog(n: int = 30, dim: int = DIM, seed: int = 7, model_id: str = MODEL) -> ItemIndex:
    """``n`` items with random unit vectors and one to three genres each, said to be made
    by encoder ``model_id``."""
    rng = np.random.default_rng(seed)
    ids = [f"i{k}" for k in range(n)]
    tags = [tuple(GENRES[(k + j) % len(GENRES)] for j in range(1 + k % 3)) for k in range(n)]
    return ItemIndex(ids, l2_normalise(rng.normal(size=(n, dim))), tags, model_id=model_id)


def text_features(text: str, dim: int = DIM) -> TextFeatures:
    """A unit vector seeded by the text, and its words as keywords (score 1/len)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    vec = l2_normalise(np.random.default_rng(seed).normal(size=(1, dim)))[0]
    words = sorted(set(text.lower().split()))
    return TextFeatures(vec, tuple((w, 1.0 / len(words)) for w in words), model_id=MODEL)


def recorded(events: list[Event], start_seq: int = 1) -> list[RecordedEvent]:
    """Events as a log would record them, in the given (arrival) order."""
    return [
        RecordedEvent(seq=start_seq + i, position=start_seq + i, recorded_at=0.0, event=e)
        for i, e in enumerate(events)
    ]


# The profile config and catalog the profile tests fold with unless they say otherwise.
CONFIG = ProfileConfig()
ITEMS = catalog()


def retrained(items: ItemIndex, alpha: float, seed: int, extra: int = 0) -> ItemIndex:
    """Another item space over ``items``' text vectors: text blended with fresh random
    "collaborative" vectors (a third of the items without one), and ``extra`` new items
    ``new-0``... appended (tagged like the first items)."""
    rng = np.random.default_rng(seed)
    n = len(items) + extra
    text = np.vstack([items.matrix, l2_normalise(rng.normal(size=(extra, items.dim)))])
    collab = l2_normalise(rng.normal(size=(n, 5)))
    collab[rng.random(n) < 1 / 3] = 0.0
    ids = list(items.ids) + [f"new-{k}" for k in range(extra)]
    tags = list(items.all_tags()) + [items.tags(k % len(items)) for k in range(extra)]
    return ItemIndex(
        ids, combine(text, collab, alpha), tags, items.model_id, text_dim=items.dim,
        space_version=f"s{seed}",
    )


def texts_for(events: list[Event]) -> dict[str, TextFeatures]:
    """The text features of every event that has text, by event id."""
    return {e.event_id: text_features(t) for e in events if (t := event_text(e)) is not None}


def profile_of(events: list[Event], config: ProfileConfig = CONFIG, **kw: Any) -> ProfileState:
    """User ``u``'s profile replayed from ``events`` (in this order) over :data:`ITEMS`."""
    return replay(recorded(events), config, ITEMS, texts_for(events), user_id="u", **kw)


def assert_same_profile(
    a: ProfileState, b: ProfileState, config: ProfileConfig = CONFIG, items: ItemIndex = ITEMS
) -> None:
    """The two states read the same (vectors and weights within 1e-6, the rest exactly)."""
    for name in ("long_vector", "short_vector"):
        np.testing.assert_allclose(
            getattr(a, name)(config, items), getattr(b, name)(config, items), atol=1e-6, rtol=1e-6
        )
    for name in ("tag_weights", "keyword_weights"):
        wa, wb = getattr(a, name)(config), getattr(b, name)(config)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert wa[k] == pytest.approx(wb[k], abs=1e-6, rel=1e-6), k
    assert a.counts == b.counts
    assert a.recent == b.recent
    assert a.excluded == b.excluded
    assert a.attribute_values() == b.attribute_values()
    assert a.t_ref == b.t_ref
    assert a.event_count == b.event_count
