"""The retrain job on the in-memory stores: triggers, coalescing, failures, too little data."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from actors.item_space_job import ItemSpaceJob
from actors.item_space_trainer import ItemSpaceTrainer
from portrait.collaborative import interactions, sppmi_embedding
from portrait.events import ItemDismissed, ItemViewed
from portrait.item_space import CollabSettings
from storage.item_spaces import InMemoryItemSpaceStore
from storage.memory import InMemoryEventLog

SETTINGS = CollabSettings(dim=4, min_count=2, oversample=4)


async def filled_log(users: int = 12, items: int = 8) -> InMemoryEventLog:
    log = InMemoryEventLog()
    for u in range(users):
        await log.append(f"u{u}", [ItemViewed(f"e{u}-{k}", f"u{u}", float(k), f"i{(u + k) % items}")
                                   for k in range(3)])
    return log


async def test_a_retrain_trains_what_the_evaluation_would_and_saves_it() -> None:
    log = await filled_log()
    spaces = InMemoryItemSpaceStore()
    space = await ItemSpaceTrainer(log, spaces, SETTINGS).retrain()
    assert space is not None and space.version == 1 and space.events == 36
    assert (await spaces.latest()) == space
    # The same functions the evaluation uses, on the same events, give the same vectors.
    recorded = await log.read_all(limit=100)
    ids = sorted({r.event.item_id for r in recorded})
    expected = sppmi_embedding(interactions([r.event for r in recorded], ids), SETTINGS)
    rows = [ids.index(i) for i in space.item_ids]
    assert np.allclose(np.abs(np.sum(expected[rows] * space.vectors, axis=1)), 1.0, atol=1e-4)


async def test_triggers_by_count_and_by_age() -> None:
    now = [0.0]
    trainer = ItemSpaceTrainer(InMemoryEventLog(), InMemoryItemSpaceStore(), SETTINGS,
                               min_new_events=10, max_age_s=60, clock=lambda: now[0])
    assert not trainer.due()
    trainer.note_events(9)
    assert not trainer.due()
    trainer.note_events(1)
    assert trainer.due()
    trainer.stats.new_events = 1
    assert not trainer.due()
    now[0] = 61.0
    assert trainer.due()


async def test_too_little_data_is_a_skip_that_says_why_and_saves_nothing() -> None:
    log = InMemoryEventLog()
    await log.append("u", [ItemViewed("e1", "u", 1.0, "a"), ItemDismissed("e2", "u", 2.0, "b")])
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(log, spaces, SETTINGS)
    assert await trainer.retrain() is None
    assert trainer.stats.skipped == 1 and "at least 2 items" in trainer.stats.last_error
    assert await spaces.latest() is None


class FailingStore(InMemoryItemSpaceStore):
    fail = False

    async def save(self, space):  # type: ignore[no-untyped-def]
        if self.fail:
            raise OSError("disk full")
        return await super().save(space)


async def test_a_failure_keeps_the_previous_space_and_is_counted() -> None:
    spaces = FailingStore()
    trainer = ItemSpaceTrainer(await filled_log(), spaces, SETTINGS)
    first = await trainer.retrain()
    spaces.fail = True
    assert await trainer.retrain() is None
    assert trainer.stats.failures == 1 and "disk full" in trainer.stats.last_error
    assert (await spaces.latest()) == first and trainer.stats.version == first.version


async def test_concurrent_retrains_coalesce() -> None:
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await filled_log(), spaces, SETTINGS)
    a, b, c = await asyncio.gather(
        trainer.retrain(fresh=False), trainer.retrain(fresh=False), trainer.retrain(fresh=False)
    )
    assert a is b is c and a.version == 1 and trainer.stats.retrains == 1


async def test_a_retrain_cancelled_midway_saves_nothing() -> None:
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await filled_log(200, 40), spaces, SETTINGS)
    task = asyncio.ensure_future(trainer._run(None))
    await asyncio.sleep(0)  # reading the log
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await spaces.latest() is None and trainer.stats.retrains == 0


async def test_the_job_publishes_after_a_due_retrain() -> None:
    published = []

    async def publish() -> None:
        published.append(1)

    trainer = ItemSpaceTrainer(await filled_log(), InMemoryItemSpaceStore(), SETTINGS,
                               min_new_events=5)
    job = ItemSpaceJob(trainer, publish)
    await job.note_events(3)
    await asyncio.sleep(0.05)
    assert not published
    await job.note_events(3)
    for _ in range(100):
        if published:
            break
        await asyncio.sleep(0.05)
    assert published and (await job.stats())["version"] == 1
    await job.close()


class HeldStore(InMemoryItemSpaceStore):
    """Holds the first save until released, so a test can act during a retrain."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.saving = asyncio.Event()

    async def save(self, space):  # type: ignore[no-untyped-def]
        self.saving.set()
        await self.release.wait()
        return await super().save(space)


async def test_a_fresh_retrain_during_a_run_includes_what_arrived_meanwhile() -> None:
    log = await filled_log(12, 8)
    spaces = HeldStore()
    trainer = ItemSpaceTrainer(log, spaces, SETTINGS)
    first = asyncio.ensure_future(trainer.retrain(fresh=False))
    await spaces.saving.wait()
    await log.append("late", [ItemViewed(f"late-{k}", "late", 9.0, f"i{k}") for k in range(3)])
    background = asyncio.ensure_future(trainer.retrain(fresh=False))
    a = asyncio.ensure_future(trainer.retrain())
    b = asyncio.ensure_future(trainer.retrain())
    spaces.release.set()
    got_first, got_background, got_a, got_b = await asyncio.gather(first, background, a, b)
    assert got_background is got_first and got_first.events == 36
    assert got_a is got_b and got_a.version == 2 and got_a.events == 39
