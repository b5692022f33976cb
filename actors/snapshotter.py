"""The host's snapshot writer: due users' profiles, written together in one transaction.

A snapshot lets activation replay only the log's tail after it. Written one per user per
transaction, snapshots would cost a commit each and crowd out the appends, so users whose
snapshot comes due are queued and one background task writes every queued user with a single
:meth:`~portrait.ports.SnapshotStore.save_many`. Users that come due while a write is in
flight wait for the next one, so the writes coalesce exactly when load grows.

A snapshot is an optimisation and the log stays the truth: a failed write is logged, never
raised, and the users simply stay due until their next snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from actors.active_users import ActiveUser
from portrait.ports import Snapshot, SnapshotStore
from portrait.snapshot_codec import state_to_bytes

_log = logging.getLogger(__name__)


class Snapshotter:
    """Writes active users' snapshots, in the background or on demand.

    Must be used from one event loop.

    Args:
        store: where snapshots go.
        config_hash: the hash of the config a user's profile is folded under (snapshots are
            keyed by it, so a config change never reads a snapshot built under another).
        on_saved: called with the number of snapshots each successful write stored.
    """

    def __init__(
        self,
        store: SnapshotStore,
        config_hash: Callable[[str], str],
        on_saved: Callable[[int], None] = lambda count: None,
    ) -> None:
        self._store = store
        self._config_hash = config_hash
        self._on_saved = on_saved
        self._due: dict[str, ActiveUser] = {}
        self._writer: asyncio.Task[None] | None = None

    def schedule(self, user_id: str, user: ActiveUser) -> None:
        """Have the user's snapshot written soon, with every other user due by then."""
        self._due[user_id] = user
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_due())

    def cancel(self, user_id: str) -> None:
        """Do not write the user's scheduled snapshot (they are being erased)."""
        self._due.pop(user_id, None)

    async def drain(self) -> None:
        """Wait until no background write is in flight and no user is due."""
        while self._writer is not None and not self._writer.done():
            # wait(), not gather(): a caller cancelled while waiting must not cancel the write.
            await asyncio.wait({self._writer})

    async def save(self, users: Sequence[tuple[str, ActiveUser]], min_tail: int = 1) -> None:
        """Snapshot now, in one write, each user whose state is at least ``min_tail`` events
        ahead of their last snapshot.

        Never raises for a failed encoding or write (it is logged); those users keep their
        old ``snapshot_seq`` and will be written another time.
        """
        # Serialised now, in one synchronous step: no fold can interleave with it.
        todo: list[tuple[ActiveUser, Snapshot]] = []
        for user_id, user in users:
            if user.state.last_seq - user.snapshot_seq < max(1, min_tail):
                continue
            try:
                data = state_to_bytes(user.state)
            except Exception:  # one unserialisable profile must not cost the others theirs
                _log.exception("serialising the snapshot of %s failed", user_id)
                continue
            todo.append(
                (user, Snapshot(user_id, user.state.last_seq, data, self._config_hash(user_id)))
            )
        if not todo:
            return
        try:
            await self._store.save_many([snap for _, snap in todo])
        except Exception:
            _log.exception("writing %d snapshots failed", len(todo))
            return
        for user, snap in todo:
            # A newer snapshot may have been stored while this write was in flight.
            user.snapshot_seq = max(user.snapshot_seq, snap.seq)
        self._on_saved(len(todo))

    async def _write_due(self) -> None:
        while self._due:
            due, self._due = self._due, {}
            await self.save(list(due.items()))


__all__ = ["Snapshotter"]
