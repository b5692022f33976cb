"""Adapters of the text-feature cache (:class:`portrait.ports.TextFeatureStore`).

Rows are derived data (an event's text encoded by one model), keyed by (event_id, model_id):
losing them only costs re-encoding, and a model change simply misses the cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgpack
import numpy as np
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.ports import TextFeatures
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import text_features


def _pack_keywords(features: TextFeatures) -> bytes:
    packed: bytes = msgpack.packb([[k, s] for k, s in features.keywords])
    return packed


def _unpack(vector: bytes, keywords: bytes) -> TextFeatures:
    kws = tuple((str(k), float(s)) for k, s in msgpack.unpackb(keywords))
    return TextFeatures(np.frombuffer(vector, dtype="<f4").copy(), kws)


class PostgresTextFeatureStore:
    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY) -> None:
        self._engine = engine
        self._retry = retry

    async def get_many(self, event_ids: Sequence[str], model_id: str) -> dict[str, TextFeatures]:
        if not event_ids:
            return {}
        query = select(
            text_features.c.event_id, text_features.c.vector, text_features.c.keywords
        ).where(
            text_features.c.model_id == model_id,
            text_features.c.event_id.in_(list(event_ids)),
        )

        async def run() -> dict[str, TextFeatures]:
            async with self._engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            return {r.event_id: _unpack(r.vector, r.keywords) for r in rows}

        return await self._retry.run(run)

    async def put_many(self, features: dict[str, TextFeatures], model_id: str) -> None:
        if not features:
            return
        rows = [
            {
                "event_id": eid,
                "model_id": model_id,
                "vector": np.asarray(f.vector, dtype="<f4").tobytes(),
                "keywords": _pack_keywords(f),
            }
            for eid, f in features.items()
        ]
        stmt = insert(text_features).on_conflict_do_nothing()

        async def run() -> None:
            async with self._engine.begin() as conn:
                await conn.execute(stmt, rows)

        await self._retry.run(run)


class InMemoryTextFeatureStore:
    """Process-local cache with the same contract (unit tests, evaluation)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], TextFeatures] = {}

    async def get_many(self, event_ids: Sequence[str], model_id: str) -> dict[str, TextFeatures]:
        return {e: f for e in event_ids if (f := self._rows.get((e, model_id))) is not None}

    async def put_many(self, features: dict[str, TextFeatures], model_id: str) -> None:
        for eid, f in features.items():
            self._rows.setdefault((eid, model_id), f)
