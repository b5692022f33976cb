"""Operating the ``user_keys`` table from the command line (``portrait master-key``).

The CLI opens this by URL and never sees an engine or a statement: SQL stays in ``storage/``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import create_engine
from storage.encryption import MasterKeys
from storage.schema import user_keys
from storage.user_keys import rewrap

_BY_MASTER_KEY = (select(user_keys.c.master_key_id, func.count())
                  .group_by(user_keys.c.master_key_id).order_by(user_keys.c.master_key_id))


class UserKeyAdmin:
    """Master-key rotation and its report over one small connection pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, url: str) -> AsyncIterator[UserKeyAdmin]:
        """An admin on the database at ``url`` (one connection), closed on exit."""
        engine = create_engine(url, pool_size=1)
        try:
            yield cls(engine)
        finally:
            await engine.dispose()

    async def rewrap(self, master: MasterKeys) -> int:
        """Re-wrap every user key under ``master``'s active key; how many were re-wrapped
        (see :func:`storage.user_keys.rewrap`)."""
        return await rewrap(self._engine, master)

    async def count_by_master_key(self) -> dict[str, int]:
        """How many user keys each master key id wraps, by id."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(_BY_MASTER_KEY)).all()
        return {str(master_id): int(count) for master_id, count in rows}


__all__ = ["UserKeyAdmin"]
