"""Item-space stores: trained collaborative vectors, newest version first.

A space is saved whole in one transaction (Postgres) or one assignment (memory): a reader
sees a complete version or the one before, and a retrain killed before its save leaves no
trace.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.item_space import CollabSettings, ItemSpace
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import item_spaces as table

KEEP_VERSIONS = 3


class InMemoryItemSpaceStore:
    """An :class:`~portrait.ports.ItemSpaceStore` in process memory."""

    def __init__(self) -> None:
        self._spaces: list[ItemSpace] = []
        self._next = 1

    async def save(self, space: ItemSpace) -> ItemSpace:
        saved = dataclasses.replace(space, version=self._next)
        self._next += 1
        self._spaces = [*self._spaces, saved][-KEEP_VERSIONS:]
        return saved

    async def latest(self) -> ItemSpace | None:
        return self._spaces[-1] if self._spaces else None

    async def latest_version(self) -> int:
        return self._spaces[-1].version if self._spaces else 0


class PostgresItemSpaceStore:
    """An :class:`~portrait.ports.ItemSpaceStore` in the ``item_spaces`` table."""

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def save(self, space: ItemSpace) -> ItemSpace:
        vectors = np.ascontiguousarray(space.vectors, dtype="<f4")
        row = {
            "trained_through": space.trained_through,
            "events": space.events,
            "dim": int(vectors.shape[1]) if vectors.ndim == 2 else 0,
            "settings": space.settings.to_dict(),
            "item_ids": list(space.item_ids),
            "vectors": vectors.tobytes(),
            "ranker": space.ranker,
        }

        async def run() -> int:
            async with self._engine.begin() as conn:
                version = int(
                    (await conn.execute(insert(table).returning(table.c.version), row)).scalar_one()
                )
                await conn.execute(delete(table).where(table.c.version <= version - KEEP_VERSIONS))
                return version

        return dataclasses.replace(space, version=await self._retry.run(run))

    async def latest(self) -> ItemSpace | None:
        query = select(table).order_by(table.c.version.desc()).limit(1)

        async def run() -> ItemSpace | None:
            async with self._engine.connect() as conn:
                r = (await conn.execute(query)).first()
            if r is None:
                return None
            settings = r.settings if isinstance(r.settings, dict) else json.loads(r.settings)
            vectors = np.frombuffer(r.vectors, dtype="<f4").reshape(len(r.item_ids), r.dim)
            return ItemSpace(
                int(r.version), tuple(r.item_ids), vectors, int(r.trained_through),
                int(r.events), CollabSettings(**settings),
                None if r.ranker is None else bytes(r.ranker),
            )

        return await self._retry.run(run)

    async def latest_version(self) -> int:
        query = select(func.max(table.c.version))

        async def run() -> int:
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar() or 0)

        return await self._retry.run(run)
