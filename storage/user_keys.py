"""The ``user_keys`` table: each user's data key, wrapped by a master key.

:class:`UserKeys` is what the Postgres adapters seal and open with. Writes always ask the
table which key is the user's *current* one (in the writing transaction), so a key destroyed
by an erasure is never used to seal new data, even by a process that still has it cached;
reads open with the key a blob names, cached by its never-reused id.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage.encryption import (
    DataKey,
    DataKeyCache,
    MasterKeyError,
    MasterKeys,
    load_master_keys,
)
from storage.schema import user_keys

_BY_USER = select(
    user_keys.c.user_id, user_keys.c.key_id, user_keys.c.wrapped, user_keys.c.master_key_id
).where(user_keys.c.user_id == func.any(bindparam("users", type_=ARRAY(Text))))
_BY_USER_LOCKED = _BY_USER.with_for_update(read=True)
_BY_KEY = select(
    user_keys.c.user_id, user_keys.c.key_id, user_keys.c.wrapped, user_keys.c.master_key_id
).where(user_keys.c.key_id == func.any(bindparam("ids", type_=ARRAY(BigInteger))))


class UserKeys:
    """Per-user data keys under ``master`` (see :mod:`storage.encryption`)."""

    def __init__(self, master: MasterKeys, cache: DataKeyCache | None = None) -> None:
        self.master = master
        self._cache = cache if cache is not None else DataKeyCache()

    @classmethod
    def from_environment(cls, key_file: Path | None = None) -> UserKeys:
        """Keys under this process's master key (``PORTRAIT_MASTER_KEY``, else ``key_file``)."""
        return cls(load_master_keys(key_file))

    def _unwrapped(self, row: Any) -> DataKey:
        key = self._cache.get(row.key_id)
        if key is None or key.user_id != row.user_id:
            key = self.master.unwrap(row.user_id, row.key_id, row.wrapped, row.master_key_id)
            self._cache.put(key)
        return key

    async def current(
        self, conn: AsyncConnection, users: Sequence[str], *, create: bool
    ) -> dict[str, DataKey]:
        """The users' current keys, read in ``conn``'s transaction and share-locked until it
        ends: an erasure (which deletes the key) waits for this transaction, then deletes
        what it wrote, or this one waits for the erasure and finds no key. With ``create``, a
        user without one gets a new key (a concurrent creator's key wins, and is returned)."""
        wanted = sorted(set(users))
        if not wanted:
            return {}
        found = {r.user_id: self._unwrapped(r)
                 for r in await conn.execute(_BY_USER_LOCKED, {"users": wanted})}
        missing = [u for u in wanted if u not in found]
        if create and missing:
            rows, made = [], {}
            for user_id in missing:
                key_id, wrapped, key = self.master.new_dek(user_id)
                rows.append({"user_id": user_id, "key_id": key_id, "wrapped": wrapped,
                             "master_key_id": self.master.active_id})
                made[user_id] = key
            inserted = await conn.execute(
                insert(user_keys).on_conflict_do_nothing(index_elements=["user_id"])
                .returning(user_keys.c.user_id), rows)
            won = {r.user_id for r in inserted}
            for user_id in won:
                self._cache.put(made[user_id])
                found[user_id] = made[user_id]
            lost = [u for u in missing if u not in won]
            if lost:
                found.update({r.user_id: self._unwrapped(r)
                              for r in await conn.execute(_BY_USER_LOCKED, {"users": lost})})
        return found

    async def by_id(self, engine: AsyncEngine, key_ids: Iterable[int]) -> dict[int, DataKey]:
        """The keys with these ids that still exist (an erased user's are gone)."""
        out: dict[int, DataKey] = {}
        missing = []
        for key_id in set(key_ids):
            key = self._cache.get(key_id)
            if key is None:
                missing.append(key_id)
            else:
                out[key_id] = key
        if missing:
            async with engine.connect() as conn:
                for row in await conn.execute(_BY_KEY, {"ids": missing}):
                    out[row.key_id] = self._unwrapped(row)
        return out

    async def destroy(self, conn: AsyncConnection, user_id: str) -> int:
        """Delete the user's key (in the erasure's transaction). Returns how many (0 or 1)."""
        self._cache.forget_user(user_id)
        result = await conn.execute(delete(user_keys).where(user_keys.c.user_id == user_id))
        return int(result.rowcount)

    def forget(self, user_id: str) -> None:
        """Drop this process's cached copies of the user's keys."""
        self._cache.forget_user(user_id)


async def check_master_keys(engine: AsyncEngine, master: MasterKeys) -> None:
    """Fail at start-up, with a clear message, when stored user keys are wrapped by a master
    key this process does not have (a wrong or missing key, or a rotation half done)."""
    async with engine.connect() as conn:
        used = (await conn.execute(select(user_keys.c.master_key_id).distinct())).scalars()
        unknown = sorted(set(used) - set(master.ids))
    if unknown:
        raise MasterKeyError(
            f"PORTRAIT_MASTER_KEY: the database holds user keys wrapped by master key(s) "
            f"{', '.join(unknown)}, which this process was not given (it has "
            f"{', '.join(master.ids)}). Configure the key the data was written with; during a "
            "rotation configure both, the new one first.")


async def rewrap(engine: AsyncEngine, master: MasterKeys, batch: int = 1000) -> int:
    """Re-wrap every user key not under the active master key with it (key rotation: the data
    itself is not touched, only the small wrapped keys). Returns how many were re-wrapped;
    safe to run again or to interrupt."""
    done = 0
    while True:
        async with engine.begin() as conn:
            rows = (await conn.execute(
                select(user_keys.c.user_id, user_keys.c.key_id, user_keys.c.wrapped,
                       user_keys.c.master_key_id)
                .where(user_keys.c.master_key_id != master.active_id)
                .limit(batch).with_for_update(skip_locked=True))).all()
            if not rows:
                return done
            for row in rows:
                raw = master.unwrap_raw(row.user_id, row.key_id, row.wrapped, row.master_key_id)
                await conn.execute(
                    update(user_keys).where(user_keys.c.user_id == row.user_id)
                    .values(wrapped=master.wrap(row.user_id, row.key_id, raw),
                            master_key_id=master.active_id))
            done += len(rows)


__all__ = ["UserKeys", "check_master_keys", "rewrap"]
