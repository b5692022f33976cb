"""One contract for every EventLog / SnapshotStore adapter (see portrait.ports).

:class:`EventLogContract` holds the tests; each ``Test*`` subclass runs them on one adapter:
in memory, on the embedded Postgres, and on the machine's Postgres (skipped if unreachable).
"""

from __future__ import annotations

import abc
import asyncio
import os
import time
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.codec import MAX_PAYLOAD_BYTES
from portrait.errors import EventIdConflict, InvalidField, PayloadTooLarge, VersionConflict
from portrait.events import (
    AttributesSet,
    Event,
    ItemClicked,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
)
from portrait.ports import (
    KEEP_SNAPSHOTS,
    AppendRequest,
    AppendResult,
    EventLog,
    Snapshot,
    SnapshotStore,
)
from storage.encryption import parse_master_keys
from storage.memory import InMemoryEventLog, InMemorySnapshotStore
from storage.postgres import PostgresEventLog, PostgresSnapshotStore
from storage.user_keys import UserKeys

pytestmark = pytest.mark.asyncio(loop_scope="session")


def view(event_id: str, user_id: str = "u1", at: float = 1000.0, item: str = "i1") -> ItemViewed:
    return ItemViewed(event_id=event_id, user_id=user_id, occurred_at=at, item_id=item)


def views(prefix: str, n: int, user_id: str = "u1", start: float = 1000.0) -> list[Event]:
    return [view(f"{prefix}{i}", user_id, start + i) for i in range(n)]


class EventLogContract(abc.ABC):
    """The tests every adapter must pass. Subclasses say how to build the adapters."""

    @pytest.fixture
    def backend(self) -> Any:
        """Whatever the adapters need (an engine); overridden by database subclasses."""
        return None

    @abc.abstractmethod
    def make_log(self, backend: Any, *, payload_limit: int = MAX_PAYLOAD_BYTES) -> EventLog:
        """A new, empty event log."""

    @abc.abstractmethod
    def make_snapshots(self, backend: Any) -> SnapshotStore:
        """A new, empty snapshot store."""

    @pytest.fixture
    def log(self, backend: Any) -> EventLog:
        return self.make_log(backend)

    @pytest.fixture
    def snapshots(self, backend: Any) -> SnapshotStore:
        return self.make_snapshots(backend)

    # -- append and read ------------------------------------------------------------------

    async def test_roundtrip_every_event_type(self, log: EventLog) -> None:
        batch: list[Event] = [
            view("a"),
            ItemClicked(event_id="b", user_id="u1", occurred_at=1001, item_id="i2"),
            ItemRated(event_id="c", user_id="u1", occurred_at=1002.5, item_id="i3", rating=4.5),
            ReviewWritten(event_id="d", user_id="u1", occurred_at=1003.0, item_id="i3",
                          text="Great ✓ 好"),
            SearchPerformed(event_id="e", user_id="u1", occurred_at=1004.0, query="red shoes"),
            AttributesSet(event_id="f", user_id="u1", occurred_at=1005.0,
                          attributes={"region": "EU", "language": "fr"}),
        ]
        before = time.time()
        results = await log.append("u1", batch)
        assert [r.event_id for r in results] == list("abcdef")
        assert not any(r.duplicate for r in results)
        recorded = await log.read("u1")
        assert [r.event for r in recorded] == batch
        assert [r.seq for r in recorded] == [1, 2, 3, 4, 5, 6]
        assert [(r.seq, r.position) for r in recorded] == [(r.seq, r.position) for r in results]
        for r in recorded:
            assert isinstance(r.recorded_at, float)
            assert before - 60 < r.recorded_at < time.time() + 60
        assert await log.version("u1") == 6

    async def test_empty_stream(self, log: EventLog) -> None:
        assert await log.version("nobody") == 0
        assert await log.read("nobody") == []
        assert await log.append("nobody", []) == []

    async def test_seqs_contiguous_and_positions_increasing(self, log: EventLog) -> None:
        positions: list[int] = []
        for round_ in range(3):
            for user in ("u1", "u2"):
                results = await log.append(user, views(f"{user}-{round_}-", 3, user))
                positions += [r.position for r in results]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        for user in ("u1", "u2"):
            assert [r.seq for r in await log.read(user)] == list(range(1, 10))

    async def test_expected_version_conflict_writes_nothing(self, log: EventLog) -> None:
        await log.append("u1", views("a", 2), expected_version=0)
        with pytest.raises(VersionConflict) as caught:
            await log.append("u1", views("b", 2), expected_version=1)
        assert (caught.value.expected, caught.value.actual) == (1, 2)
        assert await log.version("u1") == 2
        assert len(await log.read_all()) == 2
        assert [r.seq for r in await log.append("u1", views("b", 2), expected_version=2)] == [3, 4]

    async def test_duplicate_with_new_events_returns_original(self, log: EventLog) -> None:
        first = await log.append("u1", [view("a")])
        results = await log.append("u1", [view("b"), view("a"), view("c")])
        assert results[1] == AppendResult("a", 1, first[0].position, duplicate=True)
        assert [(r.event_id, r.seq, r.duplicate) for r in results] == [
            ("b", 2, False), ("a", 1, True), ("c", 3, False)]
        assert await log.version("u1") == 3

    async def test_retried_batch_with_stale_version_returns_original(self, log: EventLog) -> None:
        original = await log.append("u1", views("a", 3), expected_version=0)
        await log.append("u1", views("b", 2))
        again = await log.append("u1", views("a", 3), expected_version=0)
        assert again == [AppendResult(r.event_id, r.seq, r.position, True) for r in original]
        # A stale version with anything new in the batch is still a conflict.
        with pytest.raises(VersionConflict):
            await log.append("u1", [*views("a", 3), view("new")], expected_version=0)
        assert await log.version("u1") == 5

    async def test_repeat_inside_batch(self, log: EventLog) -> None:
        results = await log.append("u1", [view("a"), view("b"), view("a")])
        assert [(r.seq, r.duplicate) for r in results] == [(1, False), (2, False), (1, True)]
        assert results[2].position == results[0].position
        with pytest.raises(EventIdConflict):
            await log.append("u1", [view("x"), view("x", item="other")])
        assert await log.version("u1") == 2

    async def test_event_id_conflicts(self, log: EventLog) -> None:
        await log.append("u1", [view("a")])
        with pytest.raises(EventIdConflict, match="different content"):
            await log.append("u1", [view("a", item="i2")])
        with pytest.raises(EventIdConflict):  # same fields, different type
            await log.append("u1", [ItemClicked(event_id="a", user_id="u1",
                                                occurred_at=1000.0, item_id="i1")])
        assert len(await log.read_all()) == 1

    async def test_event_ids_are_per_user(self, log: EventLog) -> None:
        """A global id space let one client squat on (refused as a conflict) and probe
        (answered as a duplicate) another user's ids."""
        first = await log.append("u1", [view("a")])
        other = await log.append("u2", [view("a", user_id="u2", item="i9")])
        assert (other[0].seq, other[0].duplicate) == (1, False)
        again = await log.append("u2", [view("a", user_id="u2", item="i9")])
        assert again[0].duplicate and again[0].position == other[0].position
        assert first[0].position != other[0].position
        assert [r.event.item_id for r in await log.read("u2")] == ["i9"]

    async def test_batch_is_all_or_nothing_on_conflict(self, log: EventLog) -> None:
        await log.append("u1", [view("taken")])
        with pytest.raises(EventIdConflict):
            await log.append("u1", [view("a"), view("b"), view("taken", item="i2"), view("c")])
        assert [r.event.event_id for r in await log.read("u1")] == ["taken"]
        assert len(await log.read_all()) == 1

    async def test_batch_is_all_or_nothing_on_encoding(self, backend: Any) -> None:
        log = self.make_log(backend, payload_limit=512)
        long_review = ReviewWritten(event_id="big", user_id="u1", occurred_at=1.0,
                                    item_id="i1", text="x" * 1000)
        with pytest.raises(PayloadTooLarge) as caught:
            await log.append("u1", [view("a"), view("b"), long_review, view("c")])
        assert caught.value.field == "events[2]"
        assert await log.version("u1") == 0
        assert await log.read_all() == []

    async def test_invalid_append_arguments(self, log: EventLog) -> None:
        with pytest.raises(InvalidField) as caught:
            await log.append("u1", [view("a"), view("b", user_id="u2")])
        assert caught.value.field == "events[1].user_id"
        for bad in (-1, 1.5, True):
            with pytest.raises(InvalidField) as caught:
                await log.append("u1", [view("a")], expected_version=bad)  # type: ignore[arg-type]
            assert caught.value.field == "expected_version"
        assert await log.version("u1") == 0

    # -- reads ----------------------------------------------------------------------------

    async def test_read_filters(self, log: EventLog) -> None:
        await log.append("u1", views("a", 10, start=100.0))  # seq n occurred at 99 + n
        await log.append("u2", views("b", 3, "u2"))

        async def seqs(**filters: Any) -> list[int]:
            return [r.seq for r in await log.read("u1", **filters)]

        assert await seqs() == list(range(1, 11))
        assert await seqs(after_seq=7) == [8, 9, 10]
        assert await seqs(until_seq=3) == [1, 2, 3]
        assert await seqs(after_seq=2, until_seq=5) == [3, 4, 5]
        assert await seqs(until_time=103.0) == [1, 2, 3, 4]
        assert await seqs(limit=2) == [1, 2]
        assert await seqs(after_seq=3, until_time=106.5, limit=2) == [4, 5]
        assert await seqs(limit=0) == []
        assert await seqs(after_seq=10) == []
        assert await seqs(until_seq=0) == []

    @pytest.mark.parametrize("name", ["after_seq", "until_seq", "limit"])
    async def test_read_rejects_negative(self, log: EventLog, name: str) -> None:
        with pytest.raises(InvalidField) as caught:
            await log.read("u1", **{name: -1})
        assert caught.value.field == name

    async def test_read_tails(self, log: EventLog) -> None:
        await log.append("u1", views("a", 5))
        await log.append("u2", views("b", 3, "u2"))
        tails = await log.read_tails({"u1": 2, "u2": 0, "u3": 0, "u4": 7})
        assert {u: [r.seq for r in rs] for u, rs in tails.items()} == {
            "u1": [3, 4, 5], "u2": [1, 2, 3], "u3": [], "u4": []
        }
        assert tails["u1"] == await log.read("u1", after_seq=2)  # same records as read()
        assert await log.read_tails({}) == {}
        with pytest.raises(InvalidField) as caught:
            await log.read_tails({"u1": -1})
        assert caught.value.field == "after"

    async def test_read_all(self, log: EventLog) -> None:
        await log.append("u1", views("a", 3))
        await log.append("u2", views("b", 2, "u2"))
        await log.append("u1", views("c", 2))
        everything = await log.read_all()
        assert [r.event.event_id for r in everything] == ["a0", "a1", "a2", "b0", "b1", "c0", "c1"]
        positions = [r.position for r in everything]
        assert positions == sorted(positions)
        after = await log.read_all(after_position=positions[2], limit=3)
        assert [r.event.event_id for r in after] == ["b0", "b1", "c0"]
        assert await log.read_all(after_position=positions[-1]) == []
        for name, kwargs in (("after_position", {"after_position": -1}), ("limit", {"limit": -1})):
            with pytest.raises(InvalidField) as caught:
                await log.read_all(**kwargs)
            assert caught.value.field == name

    # -- append_many (group commit) -------------------------------------------------------

    async def test_append_many_isolates_failing_requests(self, log: EventLog) -> None:
        await log.append("u2", views("old", 2, "u2"))
        outcomes = await log.append_many([
            AppendRequest("u1", views("a", 2), expected_version=0),
            AppendRequest("u2", views("b", 2, "u2"), expected_version=0),  # stale: u2 is at 2
            AppendRequest("u3", [view("c", user_id="someone-else")]),  # invalid
            AppendRequest("u4", views("d", 1, "u4"), expected_version=None),
            AppendRequest("u5", []),
        ])
        assert [(r.seq, r.duplicate) for r in outcomes[0]] == [(1, False), (2, False)]
        assert isinstance(outcomes[1], VersionConflict) and outcomes[1].actual == 2
        assert isinstance(outcomes[2], InvalidField)
        assert outcomes[2].field == "events[0].user_id"
        assert [r.seq for r in outcomes[3]] == [1]
        assert outcomes[4] == []
        assert await log.version("u2") == 2 and await log.version("u3") == 0
        positions = [r.position for r in await log.read_all()]
        assert positions == sorted(positions) and len(positions) == 5
        assert positions[2:] == [outcomes[0][0].position, outcomes[0][1].position,
                                 outcomes[3][0].position]
        assert await log.append_many([]) == []

    async def test_append_many_requests_apply_in_order(self, log: EventLog) -> None:
        outcomes = await log.append_many([
            AppendRequest("u1", views("a", 2), expected_version=0),
            AppendRequest("u1", views("b", 1), expected_version=2),  # sees the first request
            AppendRequest("u1", views("c", 1), expected_version=0),  # stale by then
            AppendRequest("u1", [views("a", 2)[1], view("d")]),  # a1: written by request 0
            AppendRequest("u2", [view("b0", user_id="u2")]),  # u1's id, u2's own event
            AppendRequest("u1", [view("d", item="i2")]),  # d: written by request 3, differently
        ])
        assert [r.seq for r in outcomes[1]] == [3]
        assert isinstance(outcomes[2], VersionConflict)
        assert outcomes[3][0] == AppendResult("a1", 2, outcomes[0][1].position, duplicate=True)
        assert (outcomes[3][1].seq, outcomes[3][1].duplicate) == (4, False)
        assert (outcomes[4][0].seq, outcomes[4][0].duplicate) == (1, False)
        assert isinstance(outcomes[5], EventIdConflict)
        assert [r.event.event_id for r in await log.read("u1")] == ["a0", "a1", "b0", "d"]

    async def test_append_many_encoding_error_is_per_request(self, backend: Any) -> None:
        log = self.make_log(backend, payload_limit=512)
        big = ReviewWritten(event_id="big", user_id="u2", occurred_at=1.0, item_id="i",
                            text="x" * 1000)
        outcomes = await log.append_many([
            AppendRequest("u1", [view("a")]),
            AppendRequest("u2", [view("b", user_id="u2"), big]),
        ])
        assert [r.seq for r in outcomes[0]] == [1]
        assert isinstance(outcomes[1], PayloadTooLarge) and outcomes[1].field == "events[1]"
        assert await log.version("u2") == 0

    # -- concurrency ----------------------------------------------------------------------

    async def test_concurrent_writers_with_expected_version(self, log: EventLog) -> None:
        tasks, per_task = 8, 5
        winners: list[int] = []

        async def writer(t: int) -> None:
            for i in range(per_task):
                for _ in range(500):
                    version = await log.version("u1")
                    await asyncio.sleep(0)  # let the other writers interleave
                    try:
                        await log.append("u1", [view(f"t{t}-{i}")], expected_version=version)
                    except VersionConflict:
                        continue
                    winners.append(version)
                    break
                else:
                    raise AssertionError("writer starved")

        await asyncio.gather(*(writer(t) for t in range(tasks)))
        total = tasks * per_task
        recorded = await log.read("u1")
        assert [r.seq for r in recorded] == list(range(1, total + 1))
        assert sorted(r.event.event_id for r in recorded) == sorted(
            f"t{t}-{i}" for t in range(tasks) for i in range(per_task))
        assert sorted(winners) == list(range(total))  # exactly one winner per version
        positions = [r.position for r in await log.read_all(limit=total)]
        assert positions == sorted(positions) and len(positions) == total

    # -- snapshots ------------------------------------------------------------------------

    async def test_snapshots(self, snapshots: SnapshotStore) -> None:
        assert await snapshots.latest("u1", "cfg") is None
        await snapshots.save_many([])  # nothing to do is not an error
        await snapshots.save_many([Snapshot("u1", 5, b"s5", "cfg")])
        # One call may hold several users, seqs and configs.
        await snapshots.save_many([
            Snapshot("u1", 10, b"s10", "cfg"), Snapshot("u1", 20, b"s20", "cfg"),
            Snapshot("u1", 30, b"other", "cfg2"), Snapshot("u2", 40, b"u2", "cfg"),
        ])
        assert await snapshots.latest("u1", "cfg") == Snapshot("u1", 20, b"s20", "cfg")
        assert await snapshots.latest("u1", "cfg", max_seq=19) == Snapshot("u1", 10, b"s10", "cfg")
        assert await snapshots.latest("u1", "cfg", max_seq=10) == Snapshot("u1", 10, b"s10", "cfg")
        assert await snapshots.latest("u1", "cfg", max_seq=4) is None
        assert await snapshots.latest("u1", "cfg2") == Snapshot("u1", 30, b"other", "cfg2")
        assert await snapshots.latest("u1", "nope") is None
        # Saving the same key again keeps the first (snapshots are deterministic per key).
        await snapshots.save_many([Snapshot("u1", 20, b"again", "cfg")])
        assert (await snapshots.latest("u1", "cfg")).state == b"s20"  # type: ignore[union-attr]
        with pytest.raises(InvalidField) as caught:
            await snapshots.latest("u1", "cfg", max_seq=-1)
        assert caught.value.field == "max_seq"
        # Many users at once, each under its own config hash; users without one are absent.
        assert await snapshots.latest_many({"u1": "cfg", "u2": "cfg", "u9": "cfg"}) == {
            "u1": Snapshot("u1", 20, b"s20", "cfg"), "u2": Snapshot("u2", 40, b"u2", "cfg"),
        }
        assert await snapshots.latest_many({"u1": "cfg2", "u2": "cfg2"}) == {
            "u1": Snapshot("u1", 30, b"other", "cfg2")
        }
        assert await snapshots.latest_many({}) == {}
        # Only the newest KEEP_SNAPSHOTS of each (user, config) remain: they used to pile up
        # for ever (one every snapshot_every events).
        await snapshots.save_many([Snapshot("p", seq, b"p", "cfg") for seq in range(1, 8)])
        await snapshots.save_many([Snapshot("p", 8, b"p8", "cfg"), Snapshot("p", 9, b"p", "old")])
        kept = [seq for seq in range(1, 9) if await snapshots.latest("p", "cfg", seq) is not None
                and (await snapshots.latest("p", "cfg", seq)).seq == seq]  # type: ignore[union-attr]
        assert kept == list(range(9 - KEEP_SNAPSHOTS, 9))
        assert await snapshots.latest("p", "old") == Snapshot("p", 9, b"p", "old")
        assert (await snapshots.latest("u1", "cfg")).seq == 20  # type: ignore[union-attr]
        # A batch with one invalid snapshot keeps none of it.
        with pytest.raises(InvalidField):
            await snapshots.save_many(
                [Snapshot("u3", 1, b"ok", "cfg"), Snapshot("u3", -1, b"", "cfg")]
            )
        assert await snapshots.latest("u3", "cfg") is None


class TestInMemory(EventLogContract):
    def make_log(self, backend: Any, *, payload_limit: int = MAX_PAYLOAD_BYTES) -> EventLog:
        return InMemoryEventLog(payload_limit=payload_limit)

    def make_snapshots(self, backend: Any) -> SnapshotStore:
        return InMemorySnapshotStore()


class PostgresContract(EventLogContract):
    def make_log(self, backend: Any, *, payload_limit: int = MAX_PAYLOAD_BYTES) -> EventLog:
        return PostgresEventLog(backend, payload_limit=payload_limit)

    def make_snapshots(self, backend: Any) -> SnapshotStore:
        return PostgresSnapshotStore(backend)


class TestEmbeddedPostgres(PostgresContract):
    @pytest.fixture
    def backend(self, embedded_engine: AsyncEngine) -> AsyncEngine:
        return embedded_engine


class TestMachinePostgres(PostgresContract):
    @pytest.fixture
    def backend(self, machine_engine: AsyncEngine) -> AsyncEngine:
        return machine_engine


class TestEmbeddedPostgresSealed(PostgresContract):
    """The same contract with every payload and snapshot sealed under per-user keys
    (encryption at rest, the deployed default)."""

    @pytest.fixture
    async def backend(self, embedded_engine: AsyncEngine) -> AsyncEngine:
        self.keys = UserKeys(parse_master_keys(os.environ["PORTRAIT_MASTER_KEY"], "test"))
        # A snapshot is only kept for a user who has a key, which the first append creates;
        # the snapshot tests save without appending, so their users get keys here.
        async with embedded_engine.begin() as conn:
            await self.keys.current(conn, [*(f"u{i}" for i in range(1, 10)), "p"], create=True)
        return embedded_engine

    def make_log(self, backend: Any, *, payload_limit: int = MAX_PAYLOAD_BYTES) -> EventLog:
        return PostgresEventLog(backend, payload_limit=payload_limit, keys=self.keys)

    def make_snapshots(self, backend: Any) -> SnapshotStore:
        return PostgresSnapshotStore(backend, keys=self.keys)
