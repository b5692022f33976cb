"""Erasing a user at rest: crypto-shredding plus clean-up, in one transaction.

The user's data key is destroyed, so every sealed row of theirs that remains (event payloads
in the append-only log, and any copy in a backup or WAL archive) is ciphertext nobody can
open again. Their log rows are detached from the id (moved to a tombstone id, with the
plaintext item id cleared, so they count towards no popularity and no retrain), their
snapshots, cached text features and served recommendation lists (impressions: they hold the
id in the clear) are deleted, and an :class:`ErasureRecord` is kept. The
transaction takes the appenders' write lock, so an append either committed before (and is
erased) or runs after (and starts a fresh profile under a new key).

Evicting the user from its shard's memory is the shard's part (:meth:`UserHost.erase`).
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.erasure import ErasureRecord, user_hash
from storage.impression_store import InMemoryImpressionStore
from storage.memory import InMemoryEventLog, InMemorySnapshotStore
from storage.postgres import _LOCK, ERASED_PREFIX
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import erasures, impressions, snapshots, text_features, user_keys
from storage.schema import events as events_table
from storage.text_features import InMemoryTextFeatureStore
from storage.user_keys import UserKeys

_COLUMNS = (erasures.c.erasure_id, erasures.c.user_hash, erasures.c.requested_by,
            erasures.c.erased_at, erasures.c.events, erasures.c.snapshots,
            erasures.c.text_features)


def _record(row: tuple) -> ErasureRecord:  # type: ignore[type-arg]
    erasure_id, digest, requested_by, erased_at, n_events, n_snaps, n_feats = row
    return ErasureRecord(int(erasure_id), bytes(digest).hex(), requested_by, float(erased_at),
                         int(n_events), int(n_snaps), int(n_feats))


class PostgresEraser:
    """An :class:`~portrait.ports.Eraser` over the Postgres tables."""

    def __init__(self, engine: AsyncEngine, *, keys: UserKeys | None = None,
                 retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._keys = keys
        self._retry = retry

    async def erase(
        self, user_id: str, requested_by: str, now: float
    ) -> ErasureRecord | None:
        tombstone = ERASED_PREFIX + secrets.token_hex(12)

        async def attempt() -> ErasureRecord | None:
            async with self._engine.begin() as conn:
                await conn.execute(_LOCK)
                keys = (await conn.execute(
                    delete(user_keys).where(user_keys.c.user_id == user_id))).rowcount
                moved = (await conn.execute(
                    update(events_table).where(events_table.c.user_id == user_id)
                    .values(user_id=tombstone, item_id=None))).rowcount
                snaps = (await conn.execute(
                    delete(snapshots).where(snapshots.c.user_id == user_id))).rowcount
                feats = (await conn.execute(
                    delete(text_features).where(text_features.c.user_id == user_id))).rowcount
                # Not counted in the record (whose columns predate impressions): impressions
                # alone never make a user "stored" (they describe what we served).
                await conn.execute(delete(impressions).where(impressions.c.user_id == user_id))
                if not (keys or moved or snaps or feats):
                    return None  # nothing stored: commits nothing but the lock
                row = (await conn.execute(
                    insert(erasures).values(
                        user_hash=bytes.fromhex(user_hash(user_id)),
                        requested_by=requested_by, erased_at=now, events=moved,
                        snapshots=snaps, text_features=feats)
                    .returning(*_COLUMNS))).one()
                return _record(tuple(row))

        record = await self._retry.run(attempt)
        if self._keys is not None:
            self._keys.forget(user_id)  # this process's cached copy goes too
        return record

    async def last_erasure(self, user_id: str) -> ErasureRecord | None:
        query = (select(*_COLUMNS)
                 .where(erasures.c.user_hash == bytes.fromhex(user_hash(user_id)))
                 .order_by(erasures.c.erasure_id.desc()).limit(1))

        async def attempt() -> ErasureRecord | None:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
            return None if row is None else _record(tuple(row))

        return await self._retry.run(attempt)

    async def erasure_count(self) -> int:
        async def attempt() -> int:
            async with self._engine.connect() as conn:
                return int((await conn.execute(
                    select(func.coalesce(func.max(erasures.c.erasure_id), 0)))).scalar_one())

        return await self._retry.run(attempt)


class InMemoryEraser:
    """The same over the in-memory stores (nothing is at rest there, so there is no key to
    destroy: the user's data is simply dropped)."""

    def __init__(self, log: InMemoryEventLog, snaps: InMemorySnapshotStore,
                 features: InMemoryTextFeatureStore,
                 impressions: InMemoryImpressionStore | None = None) -> None:
        self._log, self._snaps, self._features = log, snaps, features
        self._impressions = impressions
        self._records: list[ErasureRecord] = []

    async def erase(
        self, user_id: str, requested_by: str, now: float
    ) -> ErasureRecord | None:
        moved = await self._log.erase_user(user_id)
        snaps = self._snaps.erase_user(user_id)
        feats = await self._features.forget_user(user_id)
        if self._impressions is not None:
            await self._impressions.forget_user(user_id)
        if not (moved or snaps or feats):
            return None
        record = ErasureRecord(len(self._records) + 1, user_hash(user_id), requested_by, now,
                               moved, snaps, feats)
        self._records.append(record)
        return record

    async def last_erasure(self, user_id: str) -> ErasureRecord | None:
        digest = user_hash(user_id)
        return next((r for r in reversed(self._records) if r.user_hash == digest), None)

    async def erasure_count(self) -> int:
        return len(self._records)


__all__ = ["InMemoryEraser", "PostgresEraser"]
