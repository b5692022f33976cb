"""Encoder versions at rest: the registered encoders, the active pointer, item vectors per
encoder, and the switch that makes one active (see :mod:`portrait.encoder_versions`).

The switch is ONE transaction: it locks ``items`` against writers (readers go on), checks that
every item has a vector under the new encoder made from its current text, keeps the outgoing
vectors in ``item_vectors`` (a rollback then copies them back without encoding), copies the
new ones into ``items``, and moves the pointer. Killed before it commits, nothing changed:
the old encoder stays active. Items whose vector is missing or stale make it raise
:class:`StaleItems` without a change, and the caller encodes those and tries again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from encoding.settings import MODELS
from portrait.catalog import ItemRecord, item_text
from portrait.encoder_versions import (
    BASE_VERSION,
    ActiveEncoder,
    EncoderVersion,
    text_digest,
)
from portrait.errors import InvalidField, PortraitError
from portrait.ports import StoredItem
from portrait.prompts import TextPrompts
from storage.memory_catalog import InMemoryCatalogStore
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import encoder_active, encoder_versions, item_vectors
from storage.schema import items as items_table

ItemVector = tuple[str, np.ndarray, str]  # (item id, vector, digest of the text it encodes)


class StaleItems(PortraitError):
    """Items without a vector under the encoder being switched to, or with one made from
    another text (upserted during the migration): encode them, then switch again."""

    def __init__(self, item_ids: Sequence[str]) -> None:
        super().__init__(f"{len(item_ids)} items have no current vector under the new encoder")
        self.item_ids = list(item_ids)


def _version(r: Any) -> EncoderVersion:
    return EncoderVersion(
        int(r.version), r.name, r.model_id, r.base_model, r.base_name, r.path, int(r.dim),
        r.state, float(r.created_at), r.activated_at, dict(r.record), _prompts(r.base_name),
    )


def _prompts(base_name: str) -> TextPrompts:
    """The role prefixes of the model a version was fine-tuned from."""
    spec = MODELS.get(base_name)
    return spec.prompts if spec is not None else TextPrompts()


def _check_new(version: EncoderVersion, known: Sequence[EncoderVersion]) -> None:
    for other in known:
        if other.name == version.name:
            raise InvalidField("name", f"an encoder called {version.name!r} is registered")
        if other.model_id == version.model_id:
            raise InvalidField("model_id", f"encoder {other.name!r} has model id "
                                           f"{version.model_id!r}")


class PostgresEncoderVersionStore:
    """Encoder versions in ``encoder_versions``, ``encoder_active`` and ``item_vectors``."""

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def _all(self, query: Any) -> list[Any]:
        return await self._retry.fetch_all(self._engine, query)

    async def register(self, version: EncoderVersion) -> EncoderVersion:
        """Store a new version as 'registered'; returns it with its number."""
        _check_new(version, await self.all_versions())
        row = {"name": version.name, "model_id": version.model_id,
               "base_model": version.base_model, "base_name": version.base_name,
               "path": version.path, "dim": version.dim, "record": dict(version.record),
               "state": "registered", "created_at": version.created_at or time.time()}

        async def run() -> int:
            async with self._engine.begin() as conn:
                stmt = insert(encoder_versions).returning(encoder_versions.c.version)
                return int((await conn.execute(stmt, row)).scalar_one())

        number = await self._retry.run(run)
        got = await self.get(number)
        assert got is not None
        return got

    async def all_versions(self) -> list[EncoderVersion]:
        rows = await self._all(select(encoder_versions).order_by(encoder_versions.c.version))
        return [_version(r) for r in rows]

    async def get(self, version: int) -> EncoderVersion | None:
        rows = await self._all(
            select(encoder_versions).where(encoder_versions.c.version == version))
        return _version(rows[0]) if rows else None

    async def by_name(self, name: str) -> EncoderVersion | None:
        rows = await self._all(select(encoder_versions).where(encoder_versions.c.name == name))
        return _version(rows[0]) if rows else None

    async def active(self) -> ActiveEncoder:
        rows = await self._all(select(encoder_active))
        if not rows:
            return ActiveEncoder()
        r = rows[0]
        return ActiveEncoder(int(r.version), None if r.previous is None else int(r.previous),
                             float(r.switched_at))

    async def set_state(self, version: int, state: str) -> None:
        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(update(encoder_versions)
                                   .where(encoder_versions.c.version == version)
                                   .values(state=state))

        await self._retry.run(run)

    async def item_records(self) -> list[ItemRecord]:
        rows = await self._all(select(items_table.c.id, items_table.c.title, items_table.c.text,
                                      items_table.c.tags, items_table.c.attributes))
        return [ItemRecord(r.id, r.title, r.text, tuple(r.tags), r.attributes) for r in rows]

    async def item_digests(self, model_id: str) -> dict[str, str]:
        """item id -> the digest of the text its vector under ``model_id`` encodes."""
        rows = await self._all(select(item_vectors.c.item_id, item_vectors.c.text_digest)
                               .where(item_vectors.c.model_id == model_id))
        return {r.item_id: r.text_digest for r in rows}

    async def put_item_vectors(self, model_id: str, vectors: Sequence[ItemVector]) -> None:
        if not vectors:
            return
        stmt = insert(item_vectors)
        stmt = stmt.on_conflict_do_update(
            index_elements=[item_vectors.c.model_id, item_vectors.c.item_id],
            set_={c: stmt.excluded[c] for c in ("embedding", "dim", "text_digest")})
        rows = [_vector_row(model_id, v) for v in vectors]

        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)

        await self._retry.run(run)

    async def drop_item_vectors(self, model_id: str) -> int:
        async def run() -> int:
            async with self._engine.begin() as conn:
                return int((await conn.execute(delete(item_vectors).where(
                    item_vectors.c.model_id == model_id))).rowcount)

        return await self._retry.run(run)

    async def switch(self, to: EncoderVersion, now: float) -> ActiveEncoder:
        """Make ``to`` active in one transaction (see the module docstring)."""

        async def run() -> ActiveEncoder:
            async with self._engine.begin() as conn:
                # Writers of items wait (an upsert during the switch lands after it, and is
                # encoded by the new encoder); readers go on with the old vectors.
                await conn.execute(text("LOCK TABLE items IN SHARE ROW EXCLUSIVE MODE"))
                current = (await conn.execute(select(
                    items_table.c.id, items_table.c.title, items_table.c.text,
                    items_table.c.tags, items_table.c.attributes, items_table.c.embedding,
                    items_table.c.model_id, items_table.c.dim))).all()
                have = dict((await conn.execute(
                    select(item_vectors.c.item_id, item_vectors.c.text_digest)
                    .where(item_vectors.c.model_id == to.model_id))).all())
                digests = {r.id: text_digest(item_text(
                    ItemRecord(r.id, r.title, r.text, tuple(r.tags), r.attributes)))
                    for r in current}
                stale = [i for i, d in digests.items() if have.get(i) != d]
                if stale:
                    raise StaleItems(stale)
                outgoing = [{"model_id": r.model_id, "item_id": r.id, "embedding": r.embedding,
                             "dim": r.dim, "text_digest": digests[r.id]}
                            for r in current
                            if r.embedding is not None and r.model_id not in (None, to.model_id)]
                if outgoing:
                    stmt = insert(item_vectors)
                    await conn.execute(stmt.on_conflict_do_update(
                        index_elements=[item_vectors.c.model_id, item_vectors.c.item_id],
                        set_={c: stmt.excluded[c] for c in ("embedding", "dim", "text_digest")}
                    ), outgoing)
                # clock_timestamp, not now(): the catalog's version is the newest updated_at,
                # and a writer that committed after this transaction began has a later now().
                await conn.execute(
                    update(items_table)
                    .where(items_table.c.id == item_vectors.c.item_id,
                           item_vectors.c.model_id == to.model_id)
                    .values(embedding=item_vectors.c.embedding, model_id=to.model_id,
                            dim=item_vectors.c.dim, updated_at=func.clock_timestamp()))
                old = (await conn.execute(select(encoder_active).with_for_update())).first()
                before = BASE_VERSION if old is None else int(old.version)
                if before == to.version:
                    return ActiveEncoder(before, None if old is None else old.previous, now)
                stmt = insert(encoder_active).values(singleton=1, version=to.version,
                                                     previous=before, switched_at=now)
                await conn.execute(stmt.on_conflict_do_update(
                    index_elements=[encoder_active.c.singleton],
                    set_={"version": to.version, "previous": before, "switched_at": now}))
                if before != BASE_VERSION:
                    await conn.execute(update(encoder_versions)
                                       .where(encoder_versions.c.version == before)
                                       .values(state="ready"))
                if not to.is_base:
                    await conn.execute(update(encoder_versions)
                                       .where(encoder_versions.c.version == to.version)
                                       .values(state="active", activated_at=now))
                return ActiveEncoder(to.version, before, now)

        return await self._retry.run(run)


def _vector_row(model_id: str, v: ItemVector) -> dict[str, object]:
    vector = np.asarray(v[1], dtype="<f4")
    return {"model_id": model_id, "item_id": v[0], "embedding": vector.tobytes(),
            "dim": int(vector.shape[0]), "text_digest": v[2]}


class InMemoryEncoderVersionStore:
    """The same contract in process memory, over the in-memory catalog."""

    def __init__(self, catalog: InMemoryCatalogStore) -> None:
        self._catalog = catalog
        self._versions: dict[int, EncoderVersion] = {}
        self._active = ActiveEncoder()
        self._vectors: dict[str, dict[str, tuple[np.ndarray, str]]] = {}

    async def register(self, version: EncoderVersion) -> EncoderVersion:
        _check_new(version, await self.all_versions())
        number = max(self._versions, default=0) + 1
        stored = EncoderVersion(number, version.name, version.model_id, version.base_model,
                                version.base_name, version.path, version.dim, "registered",
                                version.created_at or time.time(), None, dict(version.record),
                                _prompts(version.base_name))
        self._versions[number] = stored
        return stored

    async def all_versions(self) -> list[EncoderVersion]:
        return [self._versions[k] for k in sorted(self._versions)]

    async def get(self, version: int) -> EncoderVersion | None:
        return self._versions.get(version)

    async def by_name(self, name: str) -> EncoderVersion | None:
        return next((v for v in self._versions.values() if v.name == name), None)

    async def active(self) -> ActiveEncoder:
        return self._active

    async def set_state(self, version: int, state: str) -> None:
        self._replace(version, state=state)

    def _replace(self, version: int, **changes: Any) -> None:
        if version in self._versions:
            self._versions[version] = dataclasses.replace(self._versions[version], **changes)

    async def item_records(self) -> list[ItemRecord]:
        return [s.record for s in self._catalog.stored()]

    async def item_digests(self, model_id: str) -> dict[str, str]:
        return {i: d for i, (_, d) in self._vectors.get(model_id, {}).items()}

    async def put_item_vectors(self, model_id: str, vectors: Sequence[ItemVector]) -> None:
        mine = self._vectors.setdefault(model_id, {})
        for item_id, vector, digest in vectors:
            mine[item_id] = (np.asarray(vector, np.float32), digest)

    async def drop_item_vectors(self, model_id: str) -> int:
        return len(self._vectors.pop(model_id, {}))

    async def switch(self, to: EncoderVersion, now: float) -> ActiveEncoder:
        current = self._catalog.stored()
        target = self._vectors.get(to.model_id, {})
        digests = {s.record.item_id: text_digest(item_text(s.record)) for s in current}
        stale = [i for i, d in digests.items() if i not in target or target[i][1] != d]
        if stale:
            raise StaleItems(stale)
        for s in current:
            if s.model_id != to.model_id:
                self._vectors.setdefault(s.model_id, {})[s.record.item_id] = (
                    np.asarray(s.vector, np.float32), digests[s.record.item_id])
        await self._catalog.write(
            [StoredItem(s.record, target[s.record.item_id][0], to.model_id) for s in current])
        before = self._active.version
        if before == to.version:
            return self._active
        self._active = ActiveEncoder(to.version, before, now)
        if before != BASE_VERSION:
            self._replace(before, state="ready")
        self._replace(to.version, state="active", activated_at=now)
        return self._active


__all__ = ["InMemoryEncoderVersionStore", "ItemVector", "PostgresEncoderVersionStore",
           "StaleItems"]
