"""Impression stores (:class:`portrait.ports.ImpressionStore`): in memory and in the
``impressions`` table.

One row per served list: ids, the configuration that served it and the item ids as an
array (a position is an index), with no scores or reasons, so a row stays a few hundred
bytes. Rows are written by the ingress's recorder in one multi-row INSERT per flush.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.impression import Impression
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import impressions as table


class InMemoryImpressionStore:
    """An :class:`~portrait.ports.ImpressionStore` in process memory."""

    def __init__(self) -> None:
        self._rows: dict[str, Impression] = {}

    async def record_many(self, impressions: Sequence[Impression]) -> None:
        for imp in impressions:
            self._rows.setdefault(imp.request_id, imp)

    async def get(self, request_id: str) -> Impression | None:
        return self._rows.get(request_id)

    async def set_shown(self, request_id: str, shown: Sequence[str]) -> bool:
        imp = self._rows.get(request_id)
        if imp is None:
            return False
        self._rows[request_id] = dataclasses.replace(imp, shown=tuple(shown))
        return True

    async def for_experiment(self, experiment: str) -> list[Impression]:
        rows = [i for i in self._rows.values() if i.experiment == experiment]
        return sorted(rows, key=lambda i: (i.served_at, i.request_id))

    async def forget_user(self, user_id: str) -> int:
        gone = [k for k, i in self._rows.items() if i.user_id == user_id]
        for k in gone:
            del self._rows[k]
        return len(gone)


_COLUMNS = (table.c.request_id, table.c.user_id, table.c.experiment, table.c.variant,
            table.c.config_hash, table.c.item_space, table.c["items"], table.c.served_at,
            table.c.teams, table.c.shown, table.c.ranker)


def _impression(row: Sequence[Any]) -> Impression:
    rid, user, exp, variant, config, space, items, served, teams, shown, ranker = row
    return Impression(
        str(rid), str(user), str(exp), str(variant), str(config), int(space), tuple(items),
        float(served), None if teams is None else tuple(teams),
        None if shown is None else tuple(shown), str(ranker),
    )


def _row(imp: Impression) -> dict[str, object]:
    return {"request_id": imp.request_id, "user_id": imp.user_id, "experiment": imp.experiment,
            "variant": imp.variant, "config_hash": imp.config_hash,
            "item_space": imp.item_space, "items": list(imp.items), "served_at": imp.served_at,
            "teams": None if imp.teams is None else list(imp.teams),
            "shown": None if imp.shown is None else list(imp.shown), "ranker": imp.ranker}


class PostgresImpressionStore:
    """An :class:`~portrait.ports.ImpressionStore` in the ``impressions`` table."""

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def record_many(self, impressions: Sequence[Impression]) -> None:
        if not impressions:
            return
        # One statement for the whole batch; a batch re-sent after a lost acknowledgement
        # inserts nothing twice.
        stmt = insert(table).values([_row(i) for i in impressions]).on_conflict_do_nothing(
            index_elements=[table.c.request_id])

        async def attempt() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(stmt)

        await self._retry.run(attempt)

    async def get(self, request_id: str) -> Impression | None:
        query = select(*_COLUMNS).where(table.c.request_id == request_id)

        async def attempt() -> Impression | None:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
            return None if row is None else _impression(tuple(row))

        return await self._retry.run(attempt)

    async def set_shown(self, request_id: str, shown: Sequence[str]) -> bool:
        stmt = update(table).where(table.c.request_id == request_id).values(shown=list(shown))

        async def attempt() -> bool:
            async with self._engine.begin() as conn:
                return bool((await conn.execute(stmt)).rowcount)

        return await self._retry.run(attempt)

    async def for_experiment(self, experiment: str) -> list[Impression]:
        query = (select(*_COLUMNS).where(table.c.experiment == experiment)
                 .order_by(table.c.served_at, table.c.request_id))

        async def attempt() -> list[Impression]:
            async with self._engine.connect() as conn:
                return [_impression(tuple(r)) for r in await conn.execute(query)]

        return await self._retry.run(attempt)

    async def forget_user(self, user_id: str) -> int:
        stmt = delete(table).where(table.c.user_id == user_id)

        async def attempt() -> int:
            async with self._engine.begin() as conn:
                return int((await conn.execute(stmt)).rowcount)

        return await self._retry.run(attempt)


__all__ = ["InMemoryImpressionStore", "PostgresImpressionStore"]
