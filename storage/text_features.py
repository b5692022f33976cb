"""Adapters of the text-feature cache (:class:`portrait.ports.TextFeatureStore`).

Rows are derived data (an event's text encoded by one model), keyed by user, event id, text
digest and model: losing them only costs re-encoding, and a model change simply misses the
cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgpack
import numpy as np
from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.errors import InvalidField
from portrait.ports import TextFeatures, TextKey
from storage.encryption import TEXT_FEATURES, DataKey
from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import text_features
from storage.user_keys import UserKeys


def _pack_keywords(features: TextFeatures) -> bytes:
    packed: bytes = msgpack.packb([[k, s] for k, s in features.keywords])
    return packed


def _unpack(vector: bytes, keywords: bytes, model_id: str) -> TextFeatures:
    kws = tuple((str(k), float(s)) for k, s in msgpack.unpackb(keywords))
    return TextFeatures(np.frombuffer(vector, dtype="<f4").copy(), kws, model_id=model_id)


def check_models(features: Mapping[TextKey, TextFeatures], model_id: str) -> None:
    """Refuse features another encoder made than the one they would be cached under: the
    cache key's model is what keeps encoders' spaces apart."""
    for key, f in features.items():
        if f.model_id != model_id:
            raise InvalidField("model_id", f"features of {key.event_id!r} were made by "
                                           f"{f.model_id!r}, not {model_id!r}")


class PostgresTextFeatureStore:
    """The cache in the ``text_features`` table.

    With ``keys`` (encryption at rest), a row's key is a digest keyed by the user's data key
    and its vector and keywords are sealed with it: the cache says nothing about anyone's
    text to a reader of the database, and erasing the user makes every row of theirs useless
    (the erasure deletes them too). A user who has no key yet is neither looked up nor cached
    (their first append creates it; the features are encoded again at most once).
    """

    def __init__(self, engine: AsyncEngine, *, retry: RetryPolicy = DEFAULT_RETRY,
                 keys: UserKeys | None = None) -> None:
        self._engine = engine
        self._retry = retry
        self._keys = keys

    def _row_key(self, key: TextKey, data_keys: Mapping[str, DataKey]) -> str | None:
        plain = f"{key.event_id}#{key.text_digest}"
        if self._keys is None:
            return plain
        data_key = data_keys.get(key.user_id)
        return None if data_key is None else data_key.digest(plain.encode()).hex()

    async def _data_keys(self, conn: Any, keys: Iterable[TextKey]) -> dict[str, DataKey]:
        if self._keys is None:
            return {}
        return await self._keys.current(conn, [k.user_id for k in keys], create=False)

    async def get_many(
        self, keys: Sequence[TextKey], model_id: str
    ) -> dict[TextKey, TextFeatures]:
        if not keys:
            return {}

        async def run() -> dict[TextKey, TextFeatures]:
            async with self._engine.connect() as conn:
                data_keys = await self._data_keys(conn, keys)
                wanted = {(k.user_id, rk): k for k in keys
                          if (rk := self._row_key(k, data_keys)) is not None}
                if not wanted:
                    return {}
                query = select(
                    text_features.c.user_id, text_features.c.cache_key,
                    text_features.c.vector, text_features.c.keywords,
                ).where(
                    text_features.c.model_id == model_id,
                    tuple_(text_features.c.user_id, text_features.c.cache_key).in_(
                        list(wanted)),
                )
                rows = (await conn.execute(query)).all()
            out = {}
            for r in rows:
                key = wanted[(r.user_id, r.cache_key)]
                vector, keywords = r.vector, r.keywords
                if self._keys is not None:
                    data_key = data_keys[r.user_id]
                    vector = data_key.open(TEXT_FEATURES, vector)
                    keywords = data_key.open(TEXT_FEATURES, keywords)
                out[key] = _unpack(vector, keywords, model_id)
            return out

        return await self._retry.run(run)

    async def put_many(self, features: Mapping[TextKey, TextFeatures], model_id: str) -> None:
        if not features:
            return
        check_models(features, model_id)

        async def run() -> None:
            async with self._engine.begin() as conn:
                data_keys = await self._data_keys(conn, features)
                rows = []
                for key, f in features.items():
                    row_key = self._row_key(key, data_keys)
                    if row_key is None:
                        continue
                    vector = np.asarray(f.vector, dtype="<f4").tobytes()
                    keywords = _pack_keywords(f)
                    if self._keys is not None:
                        vector = data_keys[key.user_id].seal(TEXT_FEATURES, vector)
                        keywords = data_keys[key.user_id].seal(TEXT_FEATURES, keywords)
                    rows.append({"user_id": key.user_id, "cache_key": row_key,
                                 "model_id": model_id, "vector": vector, "keywords": keywords})
                if rows:
                    await conn.execute(insert(text_features).on_conflict_do_nothing(), rows)

        await self._retry.run(run)

    async def forget_user(self, user_id: str) -> int:
        async def run() -> int:
            async with self._engine.begin() as conn:
                return int((await conn.execute(
                    delete(text_features).where(text_features.c.user_id == user_id))).rowcount)

        return await self._retry.run(run)


class InMemoryTextFeatureStore:
    """Process-local cache with the same contract (unit tests, evaluation)."""

    def __init__(self) -> None:
        self._rows: dict[tuple[TextKey, str], TextFeatures] = {}

    async def get_many(
        self, keys: Sequence[TextKey], model_id: str
    ) -> dict[TextKey, TextFeatures]:
        return {k: f for k in keys if (f := self._rows.get((k, model_id))) is not None}

    async def put_many(self, features: Mapping[TextKey, TextFeatures], model_id: str) -> None:
        check_models(features, model_id)
        for key, f in features.items():
            self._rows.setdefault((key, model_id), f)

    async def forget_user(self, user_id: str) -> int:
        rows = [r for r in self._rows if r[0].user_id == user_id]
        for row in rows:
            del self._rows[row]
        return len(rows)
