"""The retrain's streaming read (distinct pairs, page by page) and its progress by stage."""

from __future__ import annotations

import numpy as np
import pytest

from actors import item_space_trainer
from actors.item_space_trainer import ItemSpaceTrainer, PairReader
from portrait.collaborative import pairs_interactions
from portrait.events import ItemDismissed, ItemViewed, RecordedEvent
from portrait.item_space import CollabSettings
from storage.item_spaces import InMemoryItemSpaceStore
from storage.memory import InMemoryEventLog

SETTINGS = CollabSettings(dim=4, min_count=2, oversample=4)


def page(pairs: list[tuple[int, int]], start: int = 0) -> list[RecordedEvent]:
    return [RecordedEvent(1, start + k + 1, 0.0, ItemViewed(f"e{start + k}", f"u{u}", 0.0, f"i{i}"))
            for k, (u, i) in enumerate(pairs)]


def test_the_reader_keeps_distinct_pairs_whatever_the_compaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(item_space_trainer, "COMPACT_PAIRS", 3)
    rng = np.random.default_rng(0)
    raw = [(int(u), int(i)) for u, i in zip(rng.integers(0, 9, 400), rng.integers(0, 30, 400),
                                            strict=True)]
    reader = PairReader()
    for k in range(0, len(raw), 50):
        reader.add(page(raw[k : k + 50], k))
    reader.add([RecordedEvent(1, 999, 0.0, ItemDismissed("d", "u0", 0.0, "i0"))])  # not positive
    got = reader.interactions()
    users = {f"u{u}": n for n, u in enumerate(dict.fromkeys(u for u, _ in raw))}
    items = {f"i{i}": n for n, i in enumerate(dict.fromkeys(i for _, i in raw))}
    want = pairs_interactions(tuple(users), [users[f"u{u}"] for u, _ in raw],
                              [items[f"i{i}"] for _, i in raw], len(items))
    assert reader.events == len(raw) and list(reader.items) == list(items)
    assert got.users == want.users and got.n_items == want.n_items
    assert np.array_equal(got.user_index, want.user_index)
    assert np.array_equal(got.item_rows, want.item_rows)
    assert got.user_index.size == len(set(raw)) < len(raw)


async def test_a_retrain_reports_each_stage_in_order_and_finishes_each() -> None:
    log = InMemoryEventLog()
    for u in range(12):
        await log.append(f"u{u}", [ItemViewed(f"e{u}-{k}", f"u{u}", float(k), f"i{(u + k) % 8}")
                                   for k in range(3)])
    seen: list[tuple[str, int, int]] = []
    trainer = ItemSpaceTrainer(log, InMemoryItemSpaceStore(), SETTINGS)
    space = await trainer.retrain(stages=lambda stage, done, total: seen.append(
        (stage, done, total)))
    assert space is not None
    order = list(dict.fromkeys(stage for stage, _, _ in seen))
    assert order == ["read log", "co-occurrence", "eigenvectors"]
    for stage in order:
        last = [(d, t) for s, d, t in seen if s == stage][-1]
        assert last[0] == last[1] > 0
    assert ("read log", 36, 36) in seen  # positions read, the log's end
