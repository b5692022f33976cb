"""The catalog in Postgres: the ``items`` table, and popularity counts from ``events``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.catalog import ItemRecord, item_text
from portrait.events import POSITIVE_ITEM_TYPES
from portrait.ports import CHANGE_SKEW, ItemChanges, ItemVectors, StoredItem
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import erasures
from storage.schema import events as events_table
from storage.schema import items as items_table

# The columns an ItemRecord is rebuilt from, and the rebuilding.
_RECORD_COLUMNS = (
    items_table.c.id,
    items_table.c.title,
    items_table.c.text,
    items_table.c.tags,
    items_table.c.attributes,
)
_REPLACED = ("title", "text", "tags", "attributes", "embedding", "model_id", "dim")


def _record(r: Any) -> ItemRecord:
    return ItemRecord(r.id, r.title, r.text, tuple(r.tags), r.attributes)


def _row(item: StoredItem) -> dict[str, object]:
    rec = item.record
    vector = np.asarray(item.vector, dtype="<f4")
    return {
        "id": rec.item_id,
        "title": rec.title,
        "text": rec.description,
        "tags": list(rec.tags),
        "attributes": dict(rec.attributes),
        "embedding": vector.tobytes(),
        "model_id": item.model_id,
        "dim": int(vector.shape[0]),
    }


class PostgresCatalogStore:
    """A :class:`~portrait.ports.CatalogStore` in the ``items`` table."""

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def _all(self, query: Any) -> list[Any]:
        return await self._retry.fetch_all(self._engine, query)

    async def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        query = select(*_RECORD_COLUMNS, items_table.c.model_id).where(
            items_table.c.id.in_(list(ids))
        )
        return {r.id: (item_text(_record(r)), r.model_id) for r in await self._all(query)}

    async def existing_vectors(
        self, ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, bytes]]:
        """:meth:`existing` with each item's stored vector bytes (little-endian float32): what
        an upsert bringing its own vectors compares, so an unchanged one writes nothing."""
        query = select(*_RECORD_COLUMNS, items_table.c.model_id, items_table.c.embedding).where(
            items_table.c.id.in_(list(ids))
        )
        return {r.id: (item_text(_record(r)), r.model_id, bytes(r.embedding or b""))
                for r in await self._all(query)}

    async def write(self, items: Sequence[StoredItem]) -> None:
        if not items:
            return
        stmt = insert(items_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[items_table.c.id],
            set_={name: stmt.excluded[name] for name in _REPLACED} | {"updated_at": func.now()},
        )
        rows = [_row(item) for item in items]

        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)

        await self._retry.run(run)

    async def get(self, item_id: str) -> ItemRecord | None:
        rows = await self._all(select(*_RECORD_COLUMNS).where(items_table.c.id == item_id))
        return _record(rows[0]) if rows else None

    async def not_embedded_by(self, model_id: str) -> list[ItemRecord]:
        query = select(*_RECORD_COLUMNS).where(items_table.c.model_id.is_distinct_from(model_id))
        return [_record(r) for r in await self._all(query)]

    async def vectors(self, model_id: str, dim: int) -> ItemVectors:
        query = (
            select(items_table.c.id, items_table.c.tags, items_table.c.embedding)
            .where(items_table.c.model_id == model_id)
            .order_by(items_table.c.id)
        )
        rows = await self._all(query)
        matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4")
        matrix = matrix.reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
        return ItemVectors([r.id for r in rows], matrix, [tuple(r.tags) for r in rows])

    async def version(self) -> int:
        # Microseconds of the newest updated_at: equal in every process reading the table.
        query = select(
            func.coalesce(
                func.floor(func.extract("epoch", func.max(items_table.c.updated_at)) * 1e6), 0
            )
        )
        return int((await self._all(query))[0][0])

    async def changed_since(self, version: int, model_id: str, dim: int) -> ItemChanges:
        """See :class:`~portrait.ports.CatalogStore`: by ``items_updated_at`` (migration
        0010), so a delta read costs the rows it returns, not the catalog."""
        stamp = func.floor(func.extract("epoch", items_table.c.updated_at) * 1e6)
        since = func.to_timestamp((max(version - CHANGE_SKEW, 0)) / 1e6)
        query = (
            select(items_table.c.id, items_table.c.tags, items_table.c.title,
                   items_table.c.embedding, stamp.label("stamp"))
            .where(items_table.c.updated_at > since, items_table.c.model_id == model_id)
            .order_by(items_table.c.id)
        )
        rows = await self._all(query)
        matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4")
        matrix = matrix.reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
        return ItemChanges([r.id for r in rows], matrix, [tuple(r.tags) for r in rows],
                           [r.title for r in rows],
                           np.array([int(r.stamp) for r in rows], dtype=np.int64))

    async def titles(self) -> dict[str, str]:
        rows = await self._all(select(items_table.c.id, items_table.c.title))
        return {r.id: r.title for r in rows}

    async def erasure_count(self) -> int:
        rows = await self._all(select(func.coalesce(func.max(erasures.c.erasure_id), 0)))
        return int(rows[0][0])

    async def interaction_counts(self, after_position: int = 0) -> tuple[dict[str, int], int]:
        """See :class:`~portrait.ports.CatalogStore`; one statement, so the counts and the
        position they cover agree."""
        query = (
            select(events_table.c.item_id, func.count(), func.max(events_table.c.position))
            .where(
                events_table.c.position > after_position,
                events_table.c.item_id.is_not(None),
                events_table.c.event_type.in_(sorted(POSITIVE_ITEM_TYPES)),
            )
            .group_by(events_table.c.item_id)
        )
        rows = await self._all(query)
        through = max((int(r[2]) for r in rows), default=after_position)
        return {r[0]: int(r[1]) for r in rows}, through
