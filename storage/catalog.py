"""The item catalog in Postgres: upserts that encode only what changed, and the item index.

An item's embedding is stored with the model id that produced it. Upserting an item whose
encoder text (:func:`portrait.catalog.item_text`) and model are unchanged writes nothing, so
re-importing a catalog is cheap and idempotent. A model change is handled by
:meth:`ItemCatalog.reencode`, which re-encodes every item the current model did not produce.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.catalog import ItemRecord, item_text
from portrait.errors import InvalidField
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import AsyncEncoder
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import items as items_table

Progress = Callable[[int], None]  # called with the number of items just finished


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """How many items were new, changed, or already up to date; how many were encoded."""

    inserted: int
    updated: int
    unchanged: int
    encoded: int


# The columns an ItemRecord is rebuilt from, and the rebuilding.
_RECORD_COLUMNS = (
    items_table.c.id,
    items_table.c.title,
    items_table.c.text,
    items_table.c.tags,
    items_table.c.attributes,
)


def _record(r: Any) -> ItemRecord:
    return ItemRecord(r.id, r.title, r.text, tuple(r.tags), r.attributes)


def _to_row(item: ItemRecord, vector: np.ndarray, model_id: str) -> dict[str, object]:
    return {
        "id": item.item_id,
        "title": item.title,
        "text": item.description,
        "tags": list(item.tags),
        "attributes": dict(item.attributes),
        "embedding": np.asarray(vector, dtype="<f4").tobytes(),
        "model_id": model_id,
        "dim": int(vector.shape[0]),
    }


class ItemCatalog:
    """Catalog reads and writes. ``encoder`` may be the Serve handle client or a local engine."""

    def __init__(
        self,
        engine: AsyncEngine,
        encoder: AsyncEncoder,
        *,
        chunk_size: int = 256,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        self._engine = engine
        self._encoder = encoder
        self._chunk = chunk_size
        self._retry = retry

    @property
    def model_id(self) -> str:
        return self._encoder.model_id

    async def _existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """item_id -> (encoder text as stored, model_id) for the ids that exist."""
        query = select(*_RECORD_COLUMNS, items_table.c.model_id).where(
            items_table.c.id.in_(list(ids))
        )

        async def run() -> dict[str, tuple[str, str | None]]:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            return {r.id: (item_text(_record(r)), r.model_id) for r in rows}

        return await self._retry.run(run)

    async def upsert(
        self, records: Sequence[ItemRecord], progress: Progress | None = None
    ) -> UpsertResult:
        """Insert or update ``records``; encode those whose text or model changed.

        Duplicate ids within one call are an error (which one should win is ambiguous).
        Each chunk is written in its own transaction after encoding, so an interrupted import
        keeps what it finished and a re-run picks up where it stopped.
        """
        seen: set[str] = set()
        for i, rec in enumerate(records):
            if rec.item_id in seen:
                raise InvalidField(f"items[{i}].id", f"duplicate item id {rec.item_id!r}")
            seen.add(rec.item_id)
        inserted = updated = unchanged = encoded = 0
        model = self._encoder.model_id
        for start in range(0, len(records), self._chunk):
            chunk = records[start : start + self._chunk]
            existing = await self._existing([r.item_id for r in chunk])
            todo = []
            for rec in chunk:
                old = existing.get(rec.item_id)
                if old is not None and old == (item_text(rec), model):
                    unchanged += 1
                else:
                    todo.append(rec)
                    if old is None:
                        inserted += 1
                    else:
                        updated += 1
            if todo:
                vectors = await self._encoder.encode([item_text(r) for r in todo])
                encoded += len(todo)
                await self._write([_to_row(r, v, model) for r, v in zip(todo, vectors)])
            if progress is not None:
                progress(len(chunk))
        return UpsertResult(inserted, updated, unchanged, encoded)

    async def _write(self, rows: list[dict[str, object]]) -> None:
        stmt = insert(items_table)
        stmt = stmt.on_conflict_do_update(
            index_elements=[items_table.c.id],
            set_={
                name: stmt.excluded[name]
                for name in ("title", "text", "tags", "attributes", "embedding", "model_id", "dim")
            }
            | {"updated_at": func.now()},
        )

        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)

        await self._retry.run(run)

    async def stale_count(self) -> int:
        """Items whose embedding the current model did not produce."""
        query = select(func.count()).select_from(items_table).where(
            items_table.c.model_id.is_distinct_from(self._encoder.model_id)
        )

        async def run() -> int:
            async with self._engine.connect() as conn:
                return int((await conn.execute(query)).scalar_one())

        return await self._retry.run(run)

    async def reencode(self, progress: Progress | None = None) -> int:
        """Re-encode every item not embedded by the current model. Returns how many."""
        query = select(*_RECORD_COLUMNS).where(
            items_table.c.model_id.is_distinct_from(self._encoder.model_id)
        )

        async def run() -> list[ItemRecord]:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            return [_record(r) for r in rows]

        records = await self._retry.run(run)
        result = await self.upsert(records, progress)
        return result.encoded

    async def count(self) -> int:
        async def run() -> int:
            async with self._engine.connect() as conn:
                return int(
                    (await conn.execute(select(func.count()).select_from(items_table))).scalar_one()
                )

        return await self._retry.run(run)

    async def get(self, item_id: str) -> ItemRecord | None:
        query = select(*_RECORD_COLUMNS).where(items_table.c.id == item_id)

        async def run() -> ItemRecord | None:
            async with self._engine.connect() as conn:
                r = (await conn.execute(query)).first()
            return None if r is None else _record(r)

        return await self._retry.run(run)

    async def load_index(self) -> ItemIndex:
        """Every item embedded by the current model, as an :class:`ItemIndex` (ordered by id)."""
        query = (
            select(items_table.c.id, items_table.c.tags, items_table.c.embedding)
            .where(items_table.c.model_id == self._encoder.model_id)
            .order_by(items_table.c.id)
        )

        async def run() -> ItemIndex:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            dim = self._encoder.dim
            matrix = np.frombuffer(b"".join(r.embedding for r in rows), dtype="<f4")
            matrix = matrix.reshape(len(rows), dim) if rows else np.zeros((0, dim), np.float32)
            return ItemIndex(
                [r.id for r in rows],
                l2_normalise(matrix),
                [tuple(r.tags) for r in rows],
                model_id=self._encoder.model_id,
            )

        return await self._retry.run(run)


async def catalog_version(engine: AsyncEngine, retry: RetryPolicy = DEFAULT_RETRY) -> int:
    """A number that grows whenever an item is inserted or changed (microseconds of the
    newest ``updated_at``); 0 for an empty catalog. Equal across processes."""
    query = select(
        func.coalesce(func.floor(func.extract("epoch", func.max(items_table.c.updated_at)) * 1e6), 0)
    )

    async def run() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    return await retry.run(run)


async def all_titles(engine: AsyncEngine, retry: RetryPolicy = DEFAULT_RETRY) -> dict[str, str]:
    """item_id -> title for the whole catalog (one scan; no parameter-count limit)."""
    query = select(items_table.c.id, items_table.c.title)

    async def run() -> dict[str, str]:
        async with engine.connect() as conn:
            return {r.id: r.title for r in await conn.execute(query)}

    return await retry.run(run)
