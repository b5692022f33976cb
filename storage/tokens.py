"""Token stores (:class:`portrait.ports.TokenStore`): in memory and in ``api_tokens``."""

from __future__ import annotations

import dataclasses

from sqlalchemy import insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.access import TokenRecord
from portrait.errors import InvalidField, StorageIntegrityError
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import api_tokens as table


def _name_taken(name: str) -> InvalidField:
    return InvalidField("name", f"a token called {name!r} exists; revoke it or pick another")


class InMemoryTokenStore:
    """A :class:`~portrait.ports.TokenStore` in process memory."""

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[TokenRecord, bytes]] = {}

    async def create(self, record: TokenRecord, digest: bytes) -> None:
        if any(r.name == record.name for r, _ in self._tokens.values()):
            raise _name_taken(record.name)
        self._tokens[record.token_id] = (record, digest)

    async def find(self, token_id: str) -> tuple[TokenRecord, bytes] | None:
        return self._tokens.get(token_id)

    async def list(self) -> list[TokenRecord]:
        return sorted((r for r, _ in self._tokens.values()), key=lambda r: r.created_at)

    async def revoke(self, name: str, now: float) -> TokenRecord | None:
        for token_id, (record, digest) in self._tokens.items():
            if name in (record.name, token_id):
                if record.revoked_at is None:
                    record = dataclasses.replace(record, revoked_at=now)
                    self._tokens[token_id] = (record, digest)
                return record
        return None


def _record(row: object) -> TokenRecord:
    return TokenRecord(
        row.token_id, row.name, frozenset(row.scopes),  # type: ignore[attr-defined]
        row.created_at, row.revoked_at,  # type: ignore[attr-defined]
    )


class PostgresTokenStore:
    """A :class:`~portrait.ports.TokenStore` in the ``api_tokens`` table."""

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def create(self, record: TokenRecord, digest: bytes) -> None:
        row = {"token_id": record.token_id, "name": record.name,
               "scopes": sorted(record.scopes), "digest": digest,
               "created_at": record.created_at, "revoked_at": record.revoked_at}

        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(insert(table), row)

        try:
            await self._retry.run(run)
        except StorageIntegrityError:
            raise _name_taken(record.name) from None

    async def find(self, token_id: str) -> tuple[TokenRecord, bytes] | None:
        query = select(table).where(table.c.token_id == token_id)

        async def run() -> tuple[TokenRecord, bytes] | None:
            async with self._engine.connect() as conn:
                row = (await conn.execute(query)).first()
            return None if row is None else (_record(row), bytes(row.digest))

        return await self._retry.run(run)

    async def list(self) -> list[TokenRecord]:
        query = select(table).order_by(table.c.created_at, table.c.name)

        async def run() -> list[TokenRecord]:
            async with self._engine.connect() as conn:
                return [_record(r) for r in (await conn.execute(query)).all()]

        return await self._retry.run(run)

    async def revoke(self, name: str, now: float) -> TokenRecord | None:
        which = or_(table.c.name == name, table.c.token_id == name)

        async def run() -> TokenRecord | None:
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(table).where(which, table.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                row = (await conn.execute(select(table).where(which))).first()
            return None if row is None else _record(row)

        return await self._retry.run(run)


__all__ = ["InMemoryTokenStore", "PostgresTokenStore"]
