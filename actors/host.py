"""The user host: the logical per-user actors that one shard process keeps in memory.

Each user is processed by one writer in arrival order (a per-user lock). A user is *activated*
on first use by loading the latest snapshot built under the current config and replaying the
log's tail; it is *passivated* (dropped from memory, snapshot written) when idle for
``idle_timeout_s`` or when the host is over its memory budget (least recently used first).
An event is acknowledged only after the log says it is durable; only then is it folded into
the in-memory state, so memory never runs ahead of the log.

This class has no Ray in it: :mod:`actors.shard` wraps it in a Ray actor, and tests drive it
directly against the in-memory or Postgres adapters.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

from actors.group_commit import GroupCommitter
from actors.text_features import TextFeatureSource
from portrait.config import ProfileConfig
from portrait.errors import VersionConflict
from portrait.events import Event, RecordedEvent
from portrait.items import ItemIndex
from portrait.ports import AppendResult, EventLog, Snapshot, SnapshotStore
from portrait.profile import ProfileState, fold, replay
from portrait.snapshot_codec import state_from_bytes, state_to_bytes
from portrait.variants import VariantPolicy

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostSettings:
    """Activation, snapshot and passivation policy of one host."""

    snapshot_every: int = 50
    idle_timeout_s: float = 600.0
    memory_budget_bytes: int = 256 * 1024 * 1024
    group_commit_window_s: float = 0.0


@dataclass
class HostStats:
    """Counters the shard exports as metrics."""

    activations: int = 0
    replayed_events: int = 0
    passivations: int = 0
    snapshots: int = 0
    ingested: int = 0
    duplicates: int = 0
    activation_seconds: float = 0.0


def state_bytes(state: ProfileState) -> int:
    """Approximate resident size of a profile (vectors, dicts, sets, their strings)."""
    size = state.long_acc.nbytes + state.short_acc.nbytes + 400
    size += sys.getsizeof(state.tags) + sum(len(k) + 80 for k in state.tags)
    size += sys.getsizeof(state.keywords) + sum(len(k) + 80 for k in state.keywords)
    size += sys.getsizeof(state.excluded) + sum(len(k) + 50 for k in state.excluded)
    size += sys.getsizeof(state.recent) + 150 * len(state.recent)
    size += 200 * (len(state.counts) + len(state.attributes))
    return size


class _User:
    __slots__ = ("state", "snapshot_seq", "last_used", "size")

    def __init__(self, state: ProfileState, snapshot_seq: int, now: float) -> None:
        self.state = state
        self.snapshot_seq = snapshot_seq
        self.last_used = now
        self.size = state_bytes(state)


class UserHost:
    """Hosts the active users of one shard. All methods must run on one event loop."""

    def __init__(
        self,
        log: EventLog,
        snapshots: SnapshotStore,
        texts: TextFeatureSource,
        items: Callable[[], ItemIndex],
        variants: VariantPolicy,
        settings: HostSettings = HostSettings(),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._snapshots = snapshots
        self._texts = texts
        self._items = items
        self.variants = variants
        # Each variant's profiles are folded and snapshotted under its own config hash.
        self._hashes = {name: v.profile.config_hash() for name, v in variants.variants.items()}
        self._settings = settings
        self._clock = clock
        self._committer = GroupCommitter(log, window_s=settings.group_commit_window_s)
        self._users: OrderedDict[str, _User] = OrderedDict()  # LRU order: oldest first
        self._locks: dict[str, asyncio.Lock] = {}
        self._bytes = 0
        self._background: set[asyncio.Task[None]] = set()
        self.stats = HostStats()

    # -- queries ---------------------------------------------------------------------------

    @property
    def active_users(self) -> int:
        return len(self._users)

    @property
    def active_bytes(self) -> int:
        return self._bytes

    @property
    def commits(self) -> int:
        return self._committer.commits

    def config(self, user_id: str) -> ProfileConfig:
        """The profile configuration of the user's variant."""
        return self.variants.for_user(user_id).profile

    def _hash(self, user_id: str) -> str:
        return self._hashes[self.variants.for_user(user_id).name]

    def _lock(self, user_id: str) -> asyncio.Lock:
        lock = self._locks.get(user_id)
        if lock is None:
            lock = self._locks[user_id] = asyncio.Lock()
        return lock

    async def state(self, user_id: str) -> ProfileState:
        """The user's current profile (activating them if needed). Do not mutate it."""
        async with self._lock(user_id):
            return (await self._active(user_id)).state

    async def state_at(
        self, user_id: str, *, until_seq: int | None = None, until_time: float | None = None
    ) -> ProfileState:
        """The profile as of a past seq or event time, replayed from the log (uncached)."""
        snapshot = None
        if until_seq is not None or until_time is not None:
            snap = await self._snapshots.latest(user_id, self._hash(user_id), max_seq=until_seq)
            snapshot = state_from_bytes(snap.state) if snap is not None else None
        after = 0
        if snapshot is not None and (until_time is None or (snapshot.t_ref or 0) <= until_time):
            after = snapshot.last_seq
        else:
            snapshot = None
        tail = await self._log.read(user_id, after_seq=after, until_seq=until_seq)
        texts = await self._texts.features_for(r.event for r in tail)
        self.stats.replayed_events += len(tail)
        return replay(
            tail, self.config(user_id), self._items(), texts, user_id=user_id,
            until_seq=until_seq, until_time=until_time, snapshot=snapshot,
        )

    # -- commands --------------------------------------------------------------------------

    async def ingest(self, user_id: str, events: Sequence[Event]) -> list[AppendResult]:
        """Append ``events`` durably, then fold the new ones; returns per-event results.

        The append and fold are shielded from cancellation: once the log has the batch, a
        caller that went away (an HTTP client disconnecting) cannot leave the in-memory
        state behind the log.
        """
        return await asyncio.shield(self._ingest(user_id, events))

    async def _ingest(self, user_id: str, events: Sequence[Event]) -> list[AppendResult]:
        async with self._lock(user_id):
            user = await self._active(user_id)
            # Encode before appending: if the encoder is down the client gets an error and
            # retries, instead of a durable event the profile cannot fold yet.
            texts = await self._texts.features_for(events)
            try:
                results = await self._committer.submit(user_id, events, user.state.last_seq)
            except VersionConflict:
                # Someone else wrote this stream (a shard that owned the user before a
                # rebalance). Our state is stale: rebuild from the log and try once more.
                _log.warning("version conflict for %s; reactivating", user_id)
                self._drop(user_id)
                user = await self._active(user_id)
                results = await self._committer.submit(user_id, events, user.state.last_seq)
            by_id = {e.event_id: e for e in events}
            fresh = [
                RecordedEvent(r.seq, r.position, time.time(), by_id[r.event_id])
                for r in results
                if not r.duplicate
            ]
            fold(user.state, fresh, self.config(user_id), self._items(), texts)
            self.stats.ingested += len(fresh)
            self.stats.duplicates += len(results) - len(fresh)
            self._touch(user_id, user)
            if user.state.last_seq - user.snapshot_seq >= self._settings.snapshot_every:
                self._spawn(self._save_snapshot(user_id, user))
        await self._enforce_budget()
        return results

    async def passivate_idle(self) -> int:
        """Passivate users idle for longer than the timeout. Returns how many."""
        cutoff = self._clock() - self._settings.idle_timeout_s
        idle = [u for u, user in self._users.items() if user.last_used < cutoff]
        for user_id in idle:
            await self.passivate(user_id)
        return len(idle)

    async def passivate(self, user_id: str) -> None:
        """Snapshot (if behind) and drop one user from memory."""
        async with self._lock(user_id):
            user = self._users.get(user_id)
            if user is None:
                return
            if user.state.last_seq > user.snapshot_seq:
                await self._save_snapshot(user_id, user)
            self._drop(user_id)
            self.stats.passivations += 1
        if not self._lock(user_id).locked():
            self._locks.pop(user_id, None)

    async def passivate_all(self) -> None:
        """Snapshot and drop every user (shutdown)."""
        for user_id in list(self._users):
            await self.passivate(user_id)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- internals -------------------------------------------------------------------------

    async def _active(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is not None:
            self._touch(user_id, user)
            return user
        started = time.perf_counter()
        snap = await self._snapshots.latest(user_id, self._hash(user_id))
        state = state_from_bytes(snap.state) if snap is not None else None
        after = state.last_seq if state is not None else 0
        tail = await self._log.read(user_id, after_seq=after)
        texts = await self._texts.features_for(r.event for r in tail)
        state = replay(
            tail, self.config(user_id), self._items(), texts, user_id=user_id, snapshot=state
        )
        user = _User(state, snap.seq if snap is not None else 0, self._clock())
        self._users[user_id] = user
        self._bytes += user.size
        self.stats.activations += 1
        self.stats.replayed_events += len(tail)
        self.stats.activation_seconds += time.perf_counter() - started
        return user

    def _touch(self, user_id: str, user: _User) -> None:
        user.last_used = self._clock()
        self._users.move_to_end(user_id)
        new_size = state_bytes(user.state)
        self._bytes += new_size - user.size
        user.size = new_size

    def _drop(self, user_id: str) -> None:
        user = self._users.pop(user_id, None)
        if user is not None:
            self._bytes -= user.size

    async def _enforce_budget(self) -> None:
        while self._bytes > self._settings.memory_budget_bytes and len(self._users) > 1:
            oldest = next(iter(self._users))
            await self.passivate(oldest)

    async def _save_snapshot(self, user_id: str, user: _User) -> None:
        state = user.state
        if state.last_seq <= user.snapshot_seq:
            return
        data = state_to_bytes(state)
        seq = state.last_seq
        try:
            await self._snapshots.save(Snapshot(user_id, seq, data, self._hash(user_id)))
        except Exception:  # a snapshot is an optimisation; the log stays the truth
            _log.exception("snapshot of %s at seq %d failed", user_id, seq)
            return
        user.snapshot_seq = max(user.snapshot_seq, seq)
        self.stats.snapshots += 1

    def _spawn(self, coro: object) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._background.add(task)
        task.add_done_callback(self._background.discard)
