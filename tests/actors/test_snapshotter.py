"""The snapshot writer: coalesced background writes, skipped users, failures swallowed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from actors.active_users import ActiveUser
from actors.snapshotter import Snapshotter
from portrait.ports import Snapshot
from portrait.profile import ProfileState
from portrait.snapshot_codec import state_from_bytes
from storage.memory import InMemorySnapshotStore


class GatedStore(InMemorySnapshotStore):
    """A snapshot store whose writes wait for ``gate`` and record what they were given."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.calls: list[list[str]] = []
        self.fail = False

    async def save_many(self, batch: Sequence[Snapshot]) -> None:
        self.calls.append([s.user_id for s in batch])
        await self.gate.wait()
        if self.fail:
            raise OSError("database unreachable")
        await super().save_many(batch)


def active(user_id: str, last_seq: int, snapshot_seq: int = 0) -> ActiveUser:
    state = ProfileState(user_id, 4)
    state.last_seq = state.event_count = last_seq
    return ActiveUser(state, snapshot_seq, 0.0)


def snapshotter(store: GatedStore, saved: list[int]) -> Snapshotter:
    return Snapshotter(store, lambda user_id: "cfg", saved.append)


async def test_users_due_during_a_write_share_the_next_one() -> None:
    store, saved = GatedStore(), []
    writer = snapshotter(store, saved)
    users = {f"u{k}": active(f"u{k}", 10 + k) for k in range(6)}
    writer.schedule("u0", users["u0"])
    await asyncio.sleep(0)  # the first write starts, and blocks in the store
    assert store.calls == [["u0"]]
    for k in range(1, 6):
        writer.schedule(f"u{k}", users[f"u{k}"])
    writer.schedule("u1", users["u1"])  # due twice: written once
    store.gate.set()
    await writer.drain()
    assert store.calls == [["u0"], ["u1", "u2", "u3", "u4", "u5"]]
    assert saved == [1, 5]
    for user_id, user in users.items():
        assert user.snapshot_seq == user.state.last_seq
        snap = await store.latest(user_id, "cfg")
        assert snap is not None and state_from_bytes(snap.state).last_seq == user.state.last_seq


async def test_only_users_ahead_of_their_snapshot_are_written() -> None:
    store, saved = GatedStore(), []
    store.gate.set()
    writer = snapshotter(store, saved)
    await writer.save([("same", active("same", 5, snapshot_seq=5)), ("new", active("new", 0))])
    assert store.calls == [] and saved == []
    await writer.save(
        [("ahead", active("ahead", 7, snapshot_seq=5)), ("same", active("same", 5, 5))]
    )
    assert store.calls == [["ahead"]] and saved == [1]


async def test_a_failed_write_is_logged_not_raised_and_the_users_stay_behind(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, saved = GatedStore(), []
    store.gate.set()
    store.fail = True
    writer = snapshotter(store, saved)
    user = active("u", 9, snapshot_seq=2)
    with caplog.at_level(logging.ERROR, logger="actors.snapshotter"):
        writer.schedule("u", user)
        await writer.drain()
        await writer.save([("u", user)])
    assert len(store.calls) == 2 and saved == [] and user.snapshot_seq == 2
    assert sum("writing 1 snapshots failed" in r.getMessage() for r in caplog.records) == 2
    store.fail = False
    await writer.save([("u", user)])  # the next attempt catches up
    assert user.snapshot_seq == 9 and saved == [1]
