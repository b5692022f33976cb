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
from typing import Callable, Mapping, Sequence, Union

from actors.group_commit import GroupCommitter
from actors.text_features import TextFeatureSource
from portrait.config import ProfileConfig
from portrait.errors import PortraitError, VersionConflict
from portrait.events import Event, RecordedEvent, event_text
from portrait.items import ItemIndex
from portrait.ports import (
    AppendRequest,
    AppendResult,
    EventLog,
    Snapshot,
    SnapshotStore,
    TextFeatures,
)
from portrait.profile import ProfileState, fold, replay
from portrait.snapshot_codec import state_from_bytes, state_to_bytes
from portrait.variants import VariantPolicy

_log = logging.getLogger(__name__)

# What one user's batch came to: its per-event results, or the error that refused it.
Outcome = Union[list[AppendResult], PortraitError]


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
    """Approximate resident size of a profile, in O(1) (it runs on every ingest): the
    containers' own sizes plus a per-entry estimate of what they hold (a key string and its
    float ~95 B, an item id ~56 B, a recent-item tuple with its strings ~150 B)."""
    return (
        state.long_acc.nbytes + state.short_acc.nbytes + 400
        + sys.getsizeof(state.tags) + 95 * len(state.tags)
        + sys.getsizeof(state.keywords) + 95 * len(state.keywords)
        + sys.getsizeof(state.excluded) + 56 * len(state.excluded)
        + sys.getsizeof(state.recent) + 150 * len(state.recent)
        + 200 * (len(state.counts) + len(state.attributes))
    )


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
        # Users whose snapshot is due, written together by one background task: a snapshot
        # per user per transaction would cost a commit each and crowd out the appends.
        self._snapshots_due: dict[str, _User] = {}
        self._snapshotter: asyncio.Task[None] | None = None
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
        """One user's batch (see :meth:`ingest_many`); raises the error that refused it."""
        outcome = (await self.ingest_many({user_id: events}))[user_id]
        if isinstance(outcome, PortraitError):
            raise outcome
        return outcome

    async def ingest_many(self, batches: Mapping[str, Sequence[Event]]) -> dict[str, Outcome]:
        """Append every user's batch durably, then fold the new events into their profiles.

        All users' batches share one group commit, and the per-user work (activation, text
        encoding) is done for the whole call at once. Per user the result is their
        :class:`AppendResult` list in input order, or the :class:`PortraitError` that refused
        their batch (nothing of it was written); one user's refusal does not affect another.

        The append and fold are shielded from cancellation: once the log has a batch, a
        caller that went away (an HTTP client disconnecting) cannot leave the in-memory
        state behind the log.
        """
        return await asyncio.shield(self._ingest_many(batches))

    async def _ingest_many(self, batches: Mapping[str, Sequence[Event]]) -> dict[str, Outcome]:
        # One writer per user: hold every user's lock for the whole call, taken in sorted
        # order so that two calls with overlapping users cannot deadlock.
        locks = [self._lock(user_id) for user_id in sorted(batches)]
        held: list[asyncio.Lock] = []
        try:
            for lock in locks:
                await lock.acquire()
                held.append(lock)
            outcomes = await self._append_and_fold(batches)
        finally:
            for lock in held:
                lock.release()
        await self._enforce_budget()
        return outcomes

    async def _append_and_fold(self, batches: Mapping[str, Sequence[Event]]) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        users = await self._activate_many(list(batches), outcomes)
        # Encode before appending: if the encoder is down those clients get an error and
        # retry, instead of a durable event the profile cannot fold yet. Users without
        # text events do not need the encoder and go ahead.
        try:
            texts = await self._texts.features_for(e for u in users for e in batches[u])
        except PortraitError as exc:
            texts = {}
            for user_id in [u for u in users if any(event_text(e) is not None for e in batches[u])]:
                outcomes[user_id] = exc
                del users[user_id]
        todo = list(users)
        for attempt in (1, 2):
            got = await self._committer.submit_many(
                [AppendRequest(u, tuple(batches[u]), users[u].state.last_seq) for u in todo]
            )
            stale = []
            for user_id, outcome in zip(todo, got):
                if isinstance(outcome, VersionConflict) and attempt == 1:
                    stale.append(user_id)
                elif isinstance(outcome, Exception) and not isinstance(outcome, PortraitError):
                    raise outcome
                else:
                    outcomes[user_id] = outcome
            if not stale:
                break
            # Someone else wrote these streams (a shard that owned the users before a
            # rebalance). Our states are stale: rebuild them from the log and try once more.
            _log.warning("version conflict for %d users; reactivating", len(stale))
            for user_id in stale:
                self._drop(user_id)
            users.update(await self._activate_many(stale, outcomes))
            todo = [u for u in stale if u not in outcomes]
        recorded_at = time.time()
        for user_id, user in users.items():
            outcome = outcomes.get(user_id)
            if isinstance(outcome, list):
                self._fold_acknowledged(user_id, user, batches[user_id], outcome, texts, recorded_at)
        return outcomes

    def _fold_acknowledged(
        self,
        user_id: str,
        user: _User,
        events: Sequence[Event],
        results: list[AppendResult],
        texts: Mapping[str, TextFeatures],
        recorded_at: float,
    ) -> None:
        by_id = {e.event_id: e for e in events}
        fresh = [
            RecordedEvent(r.seq, r.position, recorded_at, by_id[r.event_id])
            for r in results
            if not r.duplicate
        ]
        try:
            fold(user.state, fresh, self.config(user_id), self._items(), texts)
        except Exception:
            # The events are durable and acknowledged; only the in-memory copy failed.
            # Forget it so the next use rebuilds the profile from the log.
            _log.exception("folding acknowledged events of %s failed; dropping it", user_id)
            self._drop(user_id)
            return
        self.stats.ingested += len(fresh)
        self.stats.duplicates += len(results) - len(fresh)
        self._touch(user_id, user)
        self._resize(user)
        if user.state.last_seq - user.snapshot_seq >= self._settings.snapshot_every:
            self._snapshot_soon(user_id, user)

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
            await self._save_snapshots([(user_id, user)])
            self._drop(user_id)
            self.stats.passivations += 1
        if not self._lock(user_id).locked():
            self._locks.pop(user_id, None)

    async def passivate_all(self) -> None:
        """Snapshot and drop every user (shutdown), the snapshots in one transaction."""
        if self._snapshotter is not None:
            await asyncio.gather(self._snapshotter, return_exceptions=True)
        await self._save_snapshots(list(self._users.items()))
        for user_id in list(self._users):
            await self.passivate(user_id)  # nothing left to snapshot unless ingested since

    # -- internals -------------------------------------------------------------------------

    async def _active(self, user_id: str) -> _User:
        user = self._users.get(user_id)
        if user is not None:
            self._touch(user_id, user)
            return user
        return (await self._activate([user_id]))[user_id]

    async def _activate_many(
        self, user_ids: Sequence[str], outcomes: dict[str, Outcome]
    ) -> dict[str, _User]:
        """The users, active; one whose activation fails gets its error in ``outcomes``."""
        users: dict[str, _User] = {}
        missing = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None:
                missing.append(user_id)
            else:
                self._touch(user_id, user)
                users[user_id] = user
        if missing:
            try:
                users.update(await self._activate(missing))
            except PortraitError as exc:  # the store or encoder failed for all of them
                outcomes.update(dict.fromkeys(missing, exc))
        return users

    async def _activate(self, user_ids: Sequence[str]) -> dict[str, _User]:
        """Load users (not active, locks held): their latest snapshots in one query, the
        log's tails after them in another, their texts' features in one call, then replay.
        A shard that restarts re-activates users in bulk, so this is one round trip per
        step, not per user."""
        started = time.perf_counter()
        snaps = await self._snapshots.latest_many({u: self._hash(u) for u in user_ids})
        states = {u: state_from_bytes(snap.state) for u, snap in snaps.items()}
        tails = await self._log.read_tails(
            {u: states[u].last_seq if u in states else 0 for u in user_ids}
        )
        texts = await self._texts.features_for(r.event for tail in tails.values() for r in tail)
        users = {}
        for user_id in user_ids:
            state = replay(
                tails[user_id], self.config(user_id), self._items(), texts,
                user_id=user_id, snapshot=states.get(user_id),
            )
            snap = snaps.get(user_id)
            user = users[user_id] = _User(state, snap.seq if snap else 0, self._clock())
            self._users[user_id] = user
            self._bytes += user.size
            self.stats.replayed_events += len(tails[user_id])
        self.stats.activations += len(user_ids)
        self.stats.activation_seconds += time.perf_counter() - started
        return users

    def _touch(self, user_id: str, user: _User) -> None:
        user.last_used = self._clock()
        self._users.move_to_end(user_id)

    def _resize(self, user: _User) -> None:
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

    def _snapshot_soon(self, user_id: str, user: _User) -> None:
        self._snapshots_due[user_id] = user
        if self._snapshotter is None or self._snapshotter.done():
            self._snapshotter = asyncio.get_running_loop().create_task(self._write_due())

    async def _write_due(self) -> None:
        # Users that come due while a write is in flight wait for the next one.
        while self._snapshots_due:
            due, self._snapshots_due = self._snapshots_due, {}
            await self._save_snapshots(list(due.items()))

    async def _save_snapshots(self, users: Sequence[tuple[str, _User]]) -> None:
        """Snapshot the users whose state is ahead of their last snapshot, in one write."""
        # Serialised now, in one synchronous step: no fold can interleave with it.
        todo = [
            (user, Snapshot(user_id, user.state.last_seq, state_to_bytes(user.state),
                            self._hash(user_id)))
            for user_id, user in users
            if user.state.last_seq > user.snapshot_seq
        ]
        if not todo:
            return
        try:
            await self._snapshots.save_many([snap for _, snap in todo])
        except Exception:  # a snapshot is an optimisation; the log stays the truth
            _log.exception("writing %d snapshots failed", len(todo))
            return
        for user, snap in todo:
            user.snapshot_seq = max(user.snapshot_seq, snap.seq)
        self.stats.snapshots += len(todo)
