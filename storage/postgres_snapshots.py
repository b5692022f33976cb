"""Postgres adapter of the snapshot store (SQLAlchemy Core on asyncpg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Text, bindparam, func, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.ports import KEEP_SNAPSHOTS, Snapshot
from storage.encryption import SNAPSHOT, is_sealed, key_id_of
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import snapshots
from storage.user_keys import UserKeys
from storage.validation import check_count, check_snapshot

_WANTED = (
    func.unnest(bindparam("users", type_=ARRAY(Text)), bindparam("hashes", type_=ARRAY(Text)))
    .table_valued("user_id", "config_hash")
    .render_derived(name="w")
)
_NEWEST = (
    select(snapshots.c.seq, snapshots.c.state)
    .where(
        snapshots.c.user_id == _WANTED.c.user_id, snapshots.c.config_hash == _WANTED.c.config_hash
    )
    .order_by(snapshots.c.seq.desc())
    .limit(1)
    .lateral("s")
)
_LATEST_MANY = select(_WANTED.c.user_id, _NEWEST.c.seq, _NEWEST.c.state).select_from(
    _WANTED.join(_NEWEST, true())
)
_INSERT = insert(snapshots).on_conflict_do_nothing(index_elements=["user_id", "config_hash", "seq"])
# Of each (user, config hash) just saved to, delete all but the newest KEEP_SNAPSHOTS: a step
# back along the primary key finds the oldest seq to keep.
_PRUNE = text(
    """
    DELETE FROM snapshots s
    USING (SELECT DISTINCT * FROM unnest(CAST(:users AS text[]), CAST(:hashes AS text[]))
           AS w(user_id, config_hash)) w
    WHERE s.user_id = w.user_id AND s.config_hash = w.config_hash
      AND s.seq < (SELECT k.seq FROM snapshots k
                   WHERE k.user_id = w.user_id AND k.config_hash = w.config_hash
                   ORDER BY k.seq DESC OFFSET :keep - 1 LIMIT 1)
    """
)


class PostgresSnapshotStore:
    """A :class:`~portrait.ports.SnapshotStore` in the ``snapshots`` table.

    Args:
        engine: an asyncpg engine (see :func:`storage.database.create_engine`).
        retry: how transient failures are retried.
        keys: seal each state with its user's data key; a user without a current key (erased
            while the snapshot was being taken) gets no snapshot. None stores plaintext.
    """

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY,
                 keys: UserKeys | None = None) -> None:
        self._engine = engine
        self._retry = retry
        self._keys = keys

    async def save_many(self, batch: Sequence[Snapshot]) -> None:
        """Keep every snapshot of ``batch`` in one transaction; one already saved for the
        same key wins."""
        for snapshot in batch:
            check_snapshot(snapshot)
        if not batch:
            return
        pruned = sorted({(s.user_id, s.config_hash) for s in batch})
        prune = {"users": [u for u, _ in pruned], "hashes": [h for _, h in pruned],
                 "keep": KEEP_SNAPSHOTS}

        async def attempt() -> None:
            async with self._engine.begin() as conn:
                states = {id(s): s.state for s in batch}
                if self._keys is not None:
                    # The users' current keys, in this transaction: an erasure deletes the
                    # key, so a snapshot taken just before it is dropped here, not stored.
                    keys = await self._keys.current(conn, [s.user_id for s in batch],
                                                    create=False)
                    states = {id(s): keys[s.user_id].seal(SNAPSHOT, s.state)
                              for s in batch if s.user_id in keys}
                rows = [{"user_id": s.user_id, "config_hash": s.config_hash, "seq": s.seq,
                         "state": states[id(s)]} for s in batch if id(s) in states]
                if rows:
                    await conn.execute(_INSERT, rows)
                    await conn.execute(_PRUNE, prune)

        await self._retry.run(attempt)

    async def latest(
        self, user_id: str, config_hash: str, max_seq: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot built under ``config_hash`` with ``seq <= max_seq``."""
        check_count("max_seq", max_seq, optional=True)
        query = select(snapshots.c.seq, snapshots.c.state).where(
            snapshots.c.user_id == user_id, snapshots.c.config_hash == config_hash
        )
        if max_seq is not None:
            query = query.where(snapshots.c.seq <= max_seq)
        query = query.order_by(snapshots.c.seq.desc()).limit(1)

        async def attempt() -> Snapshot | None:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
            return None if row is None else Snapshot(user_id, row.seq, row.state, config_hash)

        found = await self._retry.run(attempt)
        return (await self._opened([found]))[0] if found is not None else None

    async def latest_many(self, config_hashes: Mapping[str, str]) -> dict[str, Snapshot]:
        """See :meth:`portrait.ports.SnapshotStore.latest_many`: one query for every user,
        each a single backward step on the primary key (LATERAL ... LIMIT 1)."""
        if not config_hashes:
            return {}
        params = {"users": list(config_hashes), "hashes": list(config_hashes.values())}

        async def attempt() -> dict[str, Snapshot]:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(_LATEST_MANY, params)).all()
            return {
                row.user_id: Snapshot(row.user_id, row.seq, row.state, config_hashes[row.user_id])
                for row in rows
            }

        found = await self._retry.run(attempt)
        return {s.user_id: s for s in await self._opened(list(found.values()))
                if s is not None}

    async def _opened(self, found: Sequence[Snapshot]) -> list[Snapshot | None]:
        """The snapshots with their states opened; None for one whose key is gone (erased) or
        that this process cannot open (then the log rebuilds the profile)."""
        ids = {key_id_of(s.state) for s in found if is_sealed(s.state)}
        if not ids:
            return list(found)
        keys = {}
        if self._keys is not None:
            user_keys = self._keys
            keys = await self._retry.run(lambda: user_keys.by_id(self._engine, ids))
        out: list[Snapshot | None] = []
        for snap in found:
            if not is_sealed(snap.state):
                out.append(snap)
                continue
            key = keys.get(key_id_of(snap.state))
            out.append(None if key is None or key.user_id != snap.user_id else
                       Snapshot(snap.user_id, snap.seq, key.open(SNAPSHOT, snap.state),
                                snap.config_hash))
        return out


__all__ = ["PostgresSnapshotStore"]
