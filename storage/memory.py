"""In-memory adapters of the event log and snapshot store.

Shipped code, not a test double: unit tests and the evaluation harness run on it, and the
contract suite (``tests/contract``) holds it to exactly the semantics of the Postgres adapter:
all-or-nothing batches, duplicates, event_id conflicts, version checks, global positions.
Positions here have no gaps; Postgres may skip some (a rolled-back identity value is lost),
so callers must only rely on their order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from portrait.codec import MAX_PAYLOAD_BYTES
from portrait.errors import PortraitError
from portrait.events import Event, RecordedEvent
from portrait.ports import KEEP_SNAPSHOTS, AppendRequest, AppendResult, Snapshot
from storage.planning import EventKey, Recorded, event_keys, plan_appends, users_with_new_events
from storage.validation import (
    PreparedBatch,
    check_count,
    check_read,
    check_snapshot,
    prepare_batch,
    prepare_request,
)


class InMemoryEventLog:
    """An :class:`~portrait.ports.EventLog` held in process memory.

    Args:
        clock: source of ``recorded_at`` (Unix seconds); injectable for tests.
        payload_limit: largest encoded event accepted, in bytes.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        payload_limit: int = MAX_PAYLOAD_BYTES,
    ) -> None:
        self._clock = clock
        self._payload_limit = payload_limit
        self._streams: dict[str, list[RecordedEvent]] = {}
        # Position order; an event's position is its index + 1. An erased user's events are
        # None, so that positions stay indexes.
        self._log: list[RecordedEvent | None] = []
        self._by_id: dict[EventKey, RecordedEvent] = {}
        # Appends have no await inside their critical section today, so the lock is not
        # needed for correctness yet; it keeps them safe if one is ever added (e.g. a hook).
        self._lock = asyncio.Lock()

    async def append(
        self, user_id: str, events: Sequence[Event], expected_version: int | None = None
    ) -> list[AppendResult]:
        """Append a batch, all or nothing. See :class:`~portrait.ports.EventLog`."""
        batch = prepare_batch(
            user_id, events, expected_version, payload_limit=self._payload_limit
        )
        if not batch.unique:
            return []
        async with self._lock:
            [outcome] = self._apply([batch])
        if isinstance(outcome, PortraitError):
            raise outcome
        return outcome

    async def append_many(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[AppendResult] | PortraitError]:
        """Several users' batches at once; each all or nothing, each with its own outcome."""
        batches = [prepare_request(r, payload_limit=self._payload_limit) for r in requests]
        async with self._lock:
            return self._apply(batches)

    def _apply(
        self, batches: Sequence[PreparedBatch | PortraitError]
    ) -> list[list[AppendResult] | PortraitError]:
        # No await in here: the plan and the writes happen as one step for other tasks.
        recorded = {
            key: Recorded(r.event, r.seq, r.position)
            for key in event_keys(batches)
            if (r := self._by_id.get(key)) is not None
        }
        versions = {
            user: len(self._streams.get(user, ()))
            for user in users_with_new_events(batches, recorded)
        }
        plan = plan_appends(batches, recorded, versions)
        now = self._clock()
        for row in plan.rows:
            row.position = len(self._log) + 1
            stored = RecordedEvent(row.seq, row.position, now, row.prepared.event)
            self._streams.setdefault(row.user_id, []).append(stored)
            self._log.append(stored)
            self._by_id[(row.user_id, row.prepared.event.event_id)] = stored
        return plan.results()

    async def version(self, user_id: str) -> int:
        """See :meth:`portrait.ports.EventLog.version`."""
        return len(self._streams.get(user_id, ()))

    async def read(
        self,
        user_id: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        until_time: float | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """See :meth:`portrait.ports.EventLog.read`."""
        check_read(after_seq, until_seq, until_time, limit)
        # seq n sits at index n - 1, so the seq range is a slice.
        selected = self._streams.get(user_id, [])[after_seq:until_seq]
        if until_time is not None:
            selected = [r for r in selected if r.event.occurred_at <= until_time]
        return selected if limit is None else selected[:limit]

    async def read_tails(self, after: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """See :meth:`portrait.ports.EventLog.read_tails`."""
        for seq in after.values():
            check_count("after", seq)
        return {u: self._streams.get(u, [])[seq:] for u, seq in after.items()}

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Every user's events with ``position > after_position``, in position order."""
        check_count("after_position", after_position)
        check_count("limit", limit)
        out: list[RecordedEvent] = []
        for rec in self._log[after_position:]:
            if len(out) == limit:
                break
            if rec is not None:
                out.append(rec)
        return out

    async def erase_user(self, user_id: str) -> int:
        """Drop the user's stream (erasure); returns how many events it held."""
        async with self._lock:
            stream = self._streams.pop(user_id, [])
            for rec in stream:
                self._log[rec.position - 1] = None
                del self._by_id[(user_id, rec.event.event_id)]
            return len(stream)


class InMemorySnapshotStore:
    """A :class:`~portrait.ports.SnapshotStore` held in process memory."""

    def __init__(self) -> None:
        self._snapshots: dict[tuple[str, str], dict[int, Snapshot]] = {}

    async def save_many(self, batch: Sequence[Snapshot]) -> None:
        """Keep every snapshot of ``batch``; one already saved for the same key wins (like
        Postgres)."""
        for snapshot in batch:
            check_snapshot(snapshot)
        for snapshot in batch:
            key = (snapshot.user_id, snapshot.config_hash)
            by_seq = self._snapshots.setdefault(key, {})
            by_seq.setdefault(snapshot.seq, snapshot)
            for old in sorted(by_seq)[:-KEEP_SNAPSHOTS]:
                del by_seq[old]

    async def latest(
        self, user_id: str, config_hash: str, max_seq: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot built under ``config_hash`` with ``seq <= max_seq``."""
        check_count("max_seq", max_seq, optional=True)
        by_seq = self._snapshots.get((user_id, config_hash), {})
        seqs = [seq for seq in by_seq if max_seq is None or seq <= max_seq]
        return by_seq[max(seqs)] if seqs else None

    async def latest_many(self, config_hashes: Mapping[str, str]) -> dict[str, Snapshot]:
        """See :meth:`portrait.ports.SnapshotStore.latest_many`."""
        found = {u: await self.latest(u, h) for u, h in config_hashes.items()}
        return {u: snap for u, snap in found.items() if snap is not None}

    def erase_user(self, user_id: str) -> int:
        """Drop every snapshot of the user (erasure); returns how many."""
        keys = [k for k in self._snapshots if k[0] == user_id]
        return sum(len(self._snapshots.pop(k)) for k in keys)


__all__ = ["InMemoryEventLog", "InMemorySnapshotStore"]
