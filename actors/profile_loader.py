"""Building users' profiles from what is stored: the latest usable snapshot, then the log.

A snapshot is only a shortcut: one that cannot be decoded (written by a newer or broken
release), or whose text part another encoder made (or an unknown one: written before
snapshots named it), is ignored and the profile replayed from the log. One load folds in one
text space: the catalog view's items and its encoder version are read once, together, and
the texts' features are those of that version. An event that cannot be folded is
skipped and counted rather than making its user unloadable (see :meth:`ProfileLoader.load`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from actors.host_stats import HostStats
from actors.text_features import TextFeatureSource
from portrait.config import ProfileConfig
from portrait.errors import MixedTextSpaces
from portrait.events import RecordedEvent
from portrait.fold import fold, replay
from portrait.items import ItemIndex
from portrait.ports import EventLog, Snapshot, SnapshotStore, TextFeatures
from portrait.profile import ProfileState
from portrait.snapshot_codec import state_from_bytes

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Loaded:
    """One user as loaded: the state, and the seq of the snapshot it started from (0: none
    usable, so a fresh one is due)."""

    state: ProfileState
    snapshot_seq: int


class ProfileLoader:
    """Loads profiles for a :class:`~actors.host.UserHost` (no memory of its own).

    Args:
        log: the event log (the truth).
        snapshots: where profile snapshots are kept.
        texts: the encoded features of review and search events.
        items: the current catalog.
        config_of: the profile configuration of a user's variant.
        hash_of: the config hash a user's snapshots are kept under.
        stats: the host's counters (replays, unreadable snapshots, unfoldable events).
    """

    def __init__(
        self,
        log: EventLog,
        snapshots: SnapshotStore,
        texts: TextFeatureSource,
        items: Callable[[], ItemIndex],
        config_of: Callable[[str], ProfileConfig],
        hash_of: Callable[[str], str],
        stats: HostStats,
    ) -> None:
        self._log = log
        self._snapshots = snapshots
        self._texts = texts
        self._items = items
        self._config_of = config_of
        self._hash_of = hash_of
        self._stats = stats

    async def load(self, user_ids: Sequence[str]) -> dict[str, Loaded]:
        """Their latest snapshots in one query, the log's tails after them in another, their
        texts' features in one call, then replay. A shard that restarts re-activates users in
        bulk, so this is one round trip per step, not per user."""
        started = time.perf_counter()
        items, version = self._items(), self._texts.version()  # one view: no await between
        snaps = await self._snapshots.latest_many({u: self._hash_of(u) for u in user_ids})
        starts: dict[str, tuple[Snapshot, ProfileState]] = {}
        for user_id, snap in snaps.items():
            decoded = self._decode(snap, items)
            if decoded is not None:
                starts[user_id] = (snap, decoded)
        tails = await self._log.read_tails(
            {u: starts[u][1].last_seq if u in starts else 0 for u in user_ids}
        )
        texts = await self._texts.features_for(
            (r.event for tail in tails.values() for r in tail), version)
        loaded = {}
        for user_id in user_ids:
            start = starts.get(user_id)
            snapshot = start[1] if start is not None else None
            state = self._replay_tolerant(tails[user_id], user_id, snapshot,
                                          texts.get(user_id, {}), items)
            loaded[user_id] = Loaded(state, start[0].seq if start else 0)
            self._stats.replayed_events += len(tails[user_id])
        self._stats.activations += len(user_ids)
        self._stats.activation_seconds += time.perf_counter() - started
        return loaded

    async def at(
        self, user_id: str, *, until_seq: int | None = None, until_time: float | None = None
    ) -> ProfileState:
        """The profile as of a past seq or event time, replayed from the log (uncached)."""
        snapshot = None
        items, version = self._items(), self._texts.version()
        if until_seq is not None or until_time is not None:
            snap = await self._snapshots.latest(user_id, self._hash_of(user_id), max_seq=until_seq)
            snapshot = self._decode(snap, items) if snap is not None else None
        after = 0
        # A snapshot taken after until_time may hold events that occurred later: not usable.
        if snapshot is not None and (until_time is None or (snapshot.t_ref or 0) <= until_time):
            after = snapshot.last_seq
        else:
            snapshot = None
        tail = await self._log.read(user_id, after_seq=after, until_seq=until_seq)
        texts = await self._texts.features_for((r.event for r in tail), version)
        self._stats.replayed_events += len(tail)
        return replay(
            tail, self._config_of(user_id), items, texts.get(user_id, {}),
            user_id=user_id, until_seq=until_seq, until_time=until_time, snapshot=snapshot,
        )

    def _replay_tolerant(
        self,
        tail: Sequence[RecordedEvent],
        user_id: str,
        snapshot: ProfileState | None,
        texts: Mapping[str, TextFeatures],
        items: ItemIndex,
    ) -> ProfileState:
        """:func:`replay`, except that an event that cannot be folded (a deterministic
        failure: stored features of another width after an encoder change, a bug) is skipped,
        logged and counted, instead of making the user unloadable for good and failing every
        user activated with them. Replays skip the same events, so profiles stay reproducible.

        Text of another encoder is not such an event: skipping it would silently drop the
        user's words; the load fails instead (one load folds in one space, so it is a bug)."""
        config = self._config_of(user_id)
        try:
            return replay(tail, config, items, texts, user_id=user_id, snapshot=snapshot)
        except MixedTextSpaces:
            raise
        except Exception:
            _log.exception("replay of %s failed; folding its events one by one", user_id)
        state = snapshot.copy() if snapshot is not None else ProfileState(user_id)
        for rec in tail:
            trial = state.copy()
            try:
                fold(trial, [rec], config, items, texts)
            except Exception as exc:
                self._stats.events_unfoldable += 1
                _log.error("event seq %d of %s cannot be folded, skipped: %r",
                           rec.seq, user_id, exc)
                # Past it all the same: the next append expects the log's version.
                state.last_seq = rec.seq
                continue
            state = trial
        return state

    def _decode(self, snap: Snapshot, items: ItemIndex) -> ProfileState | None:
        """The snapshot's state, or None (replay from the log) if it cannot be decoded or its
        text part is not in ``items``' encoder space (another encoder, or an unknown one)."""
        try:
            state = state_from_bytes(snap.state)
            if state.text_acc is not None and state.text_model != items.model_id:
                _log.info("snapshot of %s at seq %d holds text of encoder %r, not %r: "
                          "re-folding from the log", snap.user_id, snap.seq, state.text_model,
                          items.model_id)
                return None
            return state
        except Exception as exc:  # any failure: the log can always rebuild the profile
            _log.warning(
                "snapshot of %s at seq %d (config %s) is unreadable, replaying from the log: %r",
                snap.user_id,
                snap.seq,
                snap.config_hash,
                exc,
            )
            self._stats.snapshots_unreadable += 1
            return None
