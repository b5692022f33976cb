"""The user host: the logical per-user actors that one shard process keeps in memory.

Each user is processed by one writer in arrival order (a per-user lock). A user is *activated*
on first use by loading the latest snapshot built under the current config and replaying the
log's tail; it is *passivated* (snapshot written, dropped from memory) when idle or over the
memory budget (:mod:`actors.active_users` decides which; :mod:`actors.snapshotter` writes the
snapshots). An event is acknowledged only after the log says it is durable; only then is it
folded into the in-memory state, so memory never runs ahead of the log.

Loading a user from the stores is :mod:`actors.profile_loader`'s (a snapshot is only a
shortcut there: an unreadable one is ignored and the profile replayed from the log); the
per-user locks are :mod:`actors.user_locks`'.

This class has no Ray in it: :mod:`actors.shard` wraps it in a Ray actor, and tests drive it
directly against the in-memory or Postgres adapters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from actors.active_users import ActiveUser, ActiveUsers
from actors.group_commit import GroupCommitter
from actors.host_stats import HostStats
from actors.profile_loader import ProfileLoader
from actors.snapshotter import Snapshotter
from actors.text_features import TextFeatureSource
from actors.user_locks import UserLocks
from portrait.config import ProfileConfig
from portrait.errors import MixedTextSpaces, NotOwner, PortraitError, VersionConflict
from portrait.events import Event, RecordedEvent, event_text
from portrait.fold import fold
from portrait.items import ItemIndex
from portrait.ports import (
    AppendRequest,
    AppendResult,
    EventLog,
    SnapshotStore,
    TextFeatures,
)
from portrait.profile import ProfileState
from portrait.variants import VariantPolicy

_log = logging.getLogger(__name__)

# What one user's batch came to: its per-event results, or the error that refused it.
Outcome = list[AppendResult] | PortraitError


@dataclass(frozen=True)
class HostSettings:
    """Activation, snapshot and passivation policy of one host."""

    snapshot_every: int = 50
    # A user leaving memory (idle, over budget, handed off, shutdown) is snapshotted only if
    # this many events were folded since their last snapshot. A short tail replays from the
    # log as fast as a snapshot loads (both are one indexed read), and most users of a large
    # system have only a few events, for whom a snapshot per passivation buys nothing.
    snapshot_min_tail: int = 10
    idle_timeout_s: float = 600.0
    memory_budget_bytes: int = 256 * 1024 * 1024
    group_commit_window_s: float = 0.0


T = TypeVar("T")


class UserHost:
    """Hosts the active users of one shard. All methods must run on one event loop.

    Args:
        log: the event log (the truth).
        snapshots: where profile snapshots are kept.
        texts: the encoded features of review and search events.
        items: the current catalog; called on every fold, so a new catalog takes effect at once.
        variants: which profile configuration each user is folded under.
        settings: snapshot, passivation and group-commit policy.
        clock: monotonic seconds, for idleness; injectable for tests.
    """

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
        self._committer = GroupCommitter(log, window_s=settings.group_commit_window_s)
        self._users = ActiveUsers(clock)
        self._locks = UserLocks()
        self.stats = HostStats()
        self._loader = ProfileLoader(
            log, snapshots, texts, items, self.config, self._hash, self.stats
        )
        self._snapshotter = Snapshotter(snapshots, self._hash, self._count_snapshots)
        # Whether this host (still) owns a user; checked under the user's lock, so that once
        # a hand-off has passivated a user here, nothing of theirs runs here again.
        self.owns: Callable[[str], bool] = lambda user_id: True

    # -- queries ---------------------------------------------------------------------------

    @property
    def active_users(self) -> int:
        """How many users are in memory."""
        return len(self._users)

    @property
    def active_bytes(self) -> int:
        """The estimated memory of the users in memory."""
        return self._users.nbytes

    @property
    def pending_events(self) -> int:
        """Events waiting for their group commit (queued or being written)."""
        return self._committer.pending_events

    @property
    def commits(self) -> int:
        """Group-commit transactions issued so far."""
        return self._committer.commits

    def config(self, user_id: str) -> ProfileConfig:
        """The profile configuration of the user's variant."""
        return self.variants.for_user(user_id).profile

    async def state(self, user_id: str) -> ProfileState:
        """The user's current profile (activating them if needed). Do not mutate it.

        Reads hold memory to the same budget as writes: a user activated here may push the
        host over it, and then the least recently used are passivated. A user with nothing
        recorded is answered without being kept (reads of random ids cost no memory).
        """
        async with self._locks.hold([user_id]):
            self._check_owner(user_id)
            state = (await self._active(user_id, keep_empty=False)).state
        await self._enforce_budget()
        return state

    async def state_at(
        self, user_id: str, *, until_seq: int | None = None, until_time: float | None = None
    ) -> ProfileState:
        """The profile as of a past seq or event time, replayed from the log (uncached)."""
        return await self._loader.at(user_id, until_seq=until_seq, until_time=until_time)

    # -- commands --------------------------------------------------------------------------

    async def ingest(self, user_id: str, events: Sequence[Event]) -> list[AppendResult]:
        """One user's batch (see :meth:`ingest_many`); raises the error that refused it."""
        outcome = (await self.ingest_many({user_id: events}))[user_id]
        if isinstance(outcome, PortraitError):
            raise outcome
        return outcome

    async def ingest_many(
        self,
        batches: Mapping[str, Sequence[Event]],
        payloads: Mapping[str, Sequence[bytes]] | None = None,
    ) -> dict[str, Outcome]:
        """Append every user's batch durably, then fold the new events into their profiles.

        All users' batches share one group commit, and the per-user work (activation, text
        encoding) is done for the whole call at once. Per user the result is their
        :class:`AppendResult` list in input order, or the :class:`PortraitError` that refused
        their batch (nothing of it was written); one user's refusal does not affect another.

        ``payloads``, per user, are the events' codec bytes when the caller already has them
        (the shard gets them from the ingress): the log stores them without encoding again.

        The append and fold are shielded from cancellation: once the log has a batch, a
        caller that went away (an HTTP client disconnecting) cannot leave the in-memory
        state behind the log.
        """
        return await asyncio.shield(self._ingest_many(batches, payloads))

    async def passivate_idle(self) -> int:
        """Passivate users idle for longer than the timeout. Returns how many."""
        idle = self._users.idle(self._settings.idle_timeout_s)
        for user_id in idle:
            await self.passivate(user_id)
        return len(idle)

    async def passivate(self, user_id: str) -> None:
        """Snapshot (if behind) and drop one user from memory."""
        async with self._locks.hold([user_id]):
            user = self._users.get(user_id)
            if user is None:
                return
            await self._snapshotter.save([(user_id, user)], self._settings.snapshot_min_tail)
            self._users.drop(user_id)
            self.stats.passivations += 1

    async def erase(
        self, user_id: str, erase_at_rest: Callable[[], Awaitable[T]]
    ) -> T:
        """Forget the user here and run ``erase_at_rest`` (the store's erasure) while no write
        of theirs can run: appends hold the user's lock through their commit, so none is in
        flight, and the next one, after this returns, starts a fresh profile. The user's
        state is dropped unsnapshotted, and a snapshot scheduled for them is cancelled."""
        async with self._locks.hold([user_id]):
            self._check_owner(user_id)
            self._users.drop(user_id)
            self._snapshotter.cancel(user_id)
            await self._snapshotter.drain()  # a write in flight may hold their state
            result = await erase_at_rest()
            self.stats.erasures += 1
            return result

    async def refold_text(self, model_id: str) -> int:
        """Drop (unsnapshotted) every active user whose text part another encoder than
        ``model_id`` made: after an encoder switch their next use folds them from the log
        and the cached features of the new encoder. Users without text are valid in any
        space and stay. Under their locks, so no call of theirs is half-way. Returns how
        many were dropped."""
        stale = [u for u in list(self._users)
                 if (a := self._users.get(u)) is not None and a.state.text_acc is not None
                 and a.state.text_model != model_id]
        if not stale:
            return 0
        async with self._locks.hold(stale):
            for user_id in stale:
                user = self._users.get(user_id)
                if user is not None and user.state.text_model != model_id:
                    self._users.drop(user_id)
                    self._snapshotter.cancel(user_id)
        _log.info("%d users' text re-folds under encoder %s on their next use", len(stale),
                  model_id)
        return len(stale)

    async def hand_off(self) -> int:
        """Passivate every active user this host no longer owns (:attr:`owns` changed): each
        waits for its in-flight calls, is snapshotted and dropped, and later calls for it are
        refused (:class:`NotOwner`). Returns how many were handed off."""
        moved = [u for u in list(self._users) if not self.owns(u)]
        if not moved:
            return 0
        # All at once: their locks (so their in-flight calls finish first), one snapshot
        # write for all of them (one transaction per user made a resize take seconds).
        async with self._locks.hold(moved):
            users = [(u, user) for u in moved if (user := self._users.get(u)) is not None]
            await self._snapshotter.save(users, self._settings.snapshot_min_tail)
            for user_id, _ in users:
                self._users.drop(user_id)
                self._snapshotter.cancel(user_id)
            self.stats.passivations += len(users)
        self.stats.handed_off += len(users)
        return len(users)

    def _check_owner(self, user_id: str) -> None:
        if not self.owns(user_id):
            raise NotOwner(f"user {user_id!r} has moved to another shard")

    async def passivate_all(self) -> None:
        """Snapshot and drop every user (shutdown), the snapshots in one transaction."""
        await self._snapshotter.drain()
        await self._snapshotter.save(self._users.items(), self._settings.snapshot_min_tail)
        for user_id in list(self._users):
            await self.passivate(user_id)  # nothing left to snapshot unless ingested since

    # -- ingest ----------------------------------------------------------------------------

    async def _ingest_many(
        self,
        batches: Mapping[str, Sequence[Event]],
        payloads: Mapping[str, Sequence[bytes]] | None,
    ) -> dict[str, Outcome]:
        # One writer per user: hold every user's lock for the whole call.
        async with self._locks.hold(batches):
            moved: dict[str, Outcome] = {
                u: NotOwner(f"user {u!r} has moved to another shard")
                for u in batches if not self.owns(u)}
            if moved:
                batches = {u: b for u, b in batches.items() if u not in moved}
            outcomes = await self._append_and_fold(batches, payloads or {})
            outcomes.update(moved)
        await self._enforce_budget()
        return outcomes

    async def _append_and_fold(
        self,
        batches: Mapping[str, Sequence[Event]],
        payloads: Mapping[str, Sequence[bytes]],
    ) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        users = await self._activate_many(list(batches), outcomes)
        # Encode before appending: if the encoder is down those clients get an error and
        # retry, instead of a durable event the profile cannot fold yet. Users without
        # text events do not need the encoder and go ahead.
        texts: Mapping[str, Mapping[str, TextFeatures]]
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
                [AppendRequest(u, tuple(batches[u]), users[u].state.last_seq, payloads.get(u))
                 for u in todo]
            )
            stale = []
            for user_id, outcome in zip(todo, got, strict=True):
                if isinstance(outcome, VersionConflict):
                    self.stats.conflicts += 1
                if isinstance(outcome, VersionConflict) and attempt == 1:
                    stale.append(user_id)
                elif isinstance(outcome, (list, PortraitError)):
                    outcomes[user_id] = outcome
                else:  # not a refusal of this batch: the store itself failed
                    raise outcome
            if not stale:
                break
            # Someone else wrote these streams (a shard that owned the users before a
            # rebalance). Our states are stale: rebuild them from the log and try once more.
            _log.warning("version conflict for %d users; reactivating", len(stale))
            for user_id in stale:
                self._users.drop(user_id)
            users.update(await self._activate_many(stale, outcomes))
            todo = [u for u in stale if u not in outcomes]
        recorded_at = time.time()
        for user_id, user in users.items():
            acked = outcomes.get(user_id)
            if isinstance(acked, list):
                outcomes[user_id] = self._fold_acknowledged(
                    user_id, user, batches[user_id], acked, texts.get(user_id, {}), recorded_at
                )
        return outcomes

    def _fold_acknowledged(
        self,
        user_id: str,
        user: ActiveUser,
        events: Sequence[Event],
        results: list[AppendResult],
        texts: Mapping[str, TextFeatures],
        recorded_at: float,
    ) -> list[AppendResult]:
        """Fold the events this call recorded and return the results as the client sees them.

        "Recorded by this call" is decided by seq, not by the store's ``duplicate`` flag: when
        a commit succeeded but its acknowledgement was lost, the store's retry finds the events
        recorded and calls them duplicates, yet they are past our state and were never folded
        (nor acknowledged to anyone before).
        """
        by_id = {e.event_id: e for e in events}
        before = user.state.last_seq
        fresh: list[RecordedEvent] = []
        seen: set[int] = set()
        shown = []
        for r in results:
            if r.seq > before and r.seq not in seen:  # the first sight of a seq this call wrote
                seen.add(r.seq)
                fresh.append(RecordedEvent(r.seq, r.position, recorded_at, by_id[r.event_id]))
                r = dataclasses.replace(r, duplicate=False) if r.duplicate else r
            shown.append(r)
        results = shown
        try:
            fold(user.state, fresh, self.config(user_id), self._items(), texts)
        except MixedTextSpaces:
            # The catalog view moved to another encoder while these texts were encoded:
            # the next use folds the user again from the log, in the new view's space.
            _log.info("%s: encoder switched during an ingest; re-folding from the log", user_id)
            self._users.drop(user_id)
            return results
        except Exception:
            # The events are durable and acknowledged; only the in-memory copy failed.
            # Forget it so the next use rebuilds the profile from the log.
            _log.exception("folding acknowledged events of %s failed; dropping it", user_id)
            self._users.drop(user_id)
            return results
        self.stats.ingested += len(fresh)
        self.stats.duplicates += len(results) - len(fresh)
        self._users.touch(user_id)
        self._users.resize(user_id)
        if user.state.last_seq - user.snapshot_seq >= self._settings.snapshot_every:
            self._snapshotter.schedule(user_id, user)
        return results

    async def _enforce_budget(self) -> None:
        # Re-checked after each round: users may have grown or arrived while we passivated.
        while victims := self._users.evictions(self._settings.memory_budget_bytes):
            for user_id in victims:
                await self.passivate(user_id)

    # -- activation ------------------------------------------------------------------------

    def _hash(self, user_id: str) -> str:
        return self._hashes[self.variants.for_user(user_id).name]

    def _count_snapshots(self, count: int) -> None:
        self.stats.snapshots += count

    async def _active(self, user_id: str, *, keep_empty: bool = True) -> ActiveUser:
        """The user, active (their lock held); see :meth:`_activate` for ``keep_empty``."""
        user = self._users.get(user_id)
        if user is not None:
            self._users.touch(user_id)
            return user
        return (await self._activate([user_id], keep_empty=keep_empty))[user_id]

    async def _activate_many(
        self, user_ids: Sequence[str], outcomes: dict[str, Outcome]
    ) -> dict[str, ActiveUser]:
        """The users, active; one whose activation fails gets its error in ``outcomes``."""
        users: dict[str, ActiveUser] = {}
        missing = []
        for user_id in user_ids:
            user = self._users.get(user_id)
            if user is None:
                missing.append(user_id)
            else:
                self._users.touch(user_id)
                users[user_id] = user
        if missing:
            try:
                users.update(await self._activate(missing))
            except PortraitError as exc:  # the store or encoder failed for all of them
                outcomes.update(dict.fromkeys(missing, exc))
        return users

    async def _activate(
        self, user_ids: Sequence[str], *, keep_empty: bool = True
    ) -> dict[str, ActiveUser]:
        """Load users (not active, locks held; see :meth:`ProfileLoader.load`). With
        ``keep_empty=False`` a user without any event is returned but not kept active."""
        users = {}
        for user_id, loaded in (await self._loader.load(user_ids)).items():
            if not keep_empty and loaded.state.last_seq == 0:
                users[user_id] = ActiveUser(loaded.state, 0, 0.0)  # answered, never kept
                continue
            # Without a usable snapshot, snapshot_seq 0 gets a fresh one written soon.
            users[user_id] = self._users.add(user_id, loaded.state, loaded.snapshot_seq)
        return users


__all__ = ["HostSettings", "Outcome", "UserHost"]
