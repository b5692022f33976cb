"""The synthetic load generator: deterministic per user, and shaped as documented."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.errors import InvalidField
from portrait.events import ItemEvent, ReviewWritten, SearchPerformed
from portrait.synthetic import TrafficGenerator, TrafficShape, catalog, item_id

SHAPE = TrafficShape(users=2_000, events=20_000, items=5_000, seed=7)


@pytest.fixture(scope="module")
def streams() -> list[list]:
    return list(TrafficGenerator(SHAPE).users())


def test_a_user_stream_depends_only_on_the_seed_and_the_user(streams) -> None:
    again = TrafficGenerator(SHAPE)
    assert again.stream(1234) == streams[1234]
    assert list(again.users(10, 3)) == streams[10:13]
    other = TrafficGenerator(TrafficShape(users=2_000, events=20_000, items=5_000, seed=8))
    assert other.stream(1234) != streams[1234]


def test_sizes_activity_and_time_order(streams) -> None:
    counts = np.array([len(s) for s in streams])
    assert abs(counts.sum() / SHAPE.events - 1) < 0.1  # the mean events per user holds
    assert counts.min() >= 1 and counts.max() > 10 * np.median(counts)  # heavy users exist
    ids = [e.event_id for s in streams for e in s]
    assert len(ids) == len(set(ids))
    for s in streams:
        times = [e.occurred_at for e in s]
        assert times == sorted(times) and len(set(times)) == len(times)
        assert SHAPE.start <= times[0] and times[-1] <= SHAPE.start + SHAPE.span_days * 86_400


def test_popularity_is_a_long_tail_and_refers_to_the_catalog(streams) -> None:
    items = [e.item_id for s in streams for e in s if isinstance(e, ItemEvent)]
    known = {i.item_id for i in catalog(SHAPE)}
    assert set(items) <= known and item_id(0) in known
    _, counts = np.unique(items, return_counts=True)
    top = np.sort(counts)[::-1]
    head = top[: SHAPE.items // 100].sum() / top.sum()  # the top 1% of the catalog
    assert 0.15 < head < 0.8


def test_sessions_are_bursty_and_a_share_has_text(streams) -> None:
    gaps = np.concatenate([np.diff([e.occurred_at for e in s]) for s in streams if len(s) > 1])
    assert np.median(gaps) < 120 and np.percentile(gaps, 95) > 3_600
    texts = sum(isinstance(e, (SearchPerformed, ReviewWritten)) for s in streams for e in s)
    assert abs(texts / sum(map(len, streams)) - SHAPE.text_share) < 0.01


def test_tastes_concentrate_a_user_on_few_genres(streams) -> None:
    genres = {i.item_id: i.tags[0] for i in catalog(SHAPE)}
    top_shares = []
    for s in streams:
        own = [genres[e.item_id] for e in s if isinstance(e, ItemEvent)]
        if len(own) >= 30:
            _, c = np.unique(own, return_counts=True)
            top_shares.append(c.max() / c.sum())
    # 24 genres: without tastes the top genre would hold about a tenth of a user's items.
    assert np.median(top_shares) > 0.25


@pytest.mark.parametrize("bad", [{"users": 0}, {"text_share": 1.5}, {"zipf_s": 0}])
def test_a_bad_shape_names_its_field(bad) -> None:
    with pytest.raises(InvalidField):
        TrafficShape(**{"users": 10, "events": 100, **bad})
