"""Postgres adapter of the snapshot store (SQLAlchemy Core on asyncpg)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Text, bindparam, func, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.ports import KEEP_SNAPSHOTS, Snapshot
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import snapshots
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
    """

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def save_many(self, batch: Sequence[Snapshot]) -> None:
        """Keep every snapshot of ``batch`` in one transaction; one already saved for the
        same key wins."""
        for snapshot in batch:
            check_snapshot(snapshot)
        if not batch:
            return
        rows = [
            {"user_id": s.user_id, "config_hash": s.config_hash, "seq": s.seq, "state": s.state}
            for s in batch
        ]

        pruned = sorted({(s.user_id, s.config_hash) for s in batch})
        prune = {"users": [u for u, _ in pruned], "hashes": [h for _, h in pruned],
                 "keep": KEEP_SNAPSHOTS}

        async def attempt() -> None:
            async with self._engine.begin() as conn:
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

        return await self._retry.run(attempt)

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

        return await self._retry.run(attempt)


__all__ = ["PostgresSnapshotStore"]
