"""One contract for every TextFeatureStore adapter (see portrait.ports): in memory, on the
embedded Postgres in the clear and sealed under users' keys, and on the machine's Postgres
(skipped if unreachable)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from portrait.errors import InvalidField
from portrait.ports import TextFeatures, TextFeatureStore, TextKey
from storage.stores import Stores
from storage.text_features import InMemoryTextFeatureStore, PostgresTextFeatureStore
from tests.contract.backends import (
    OnEmbeddedPostgres,
    OnEmbeddedPostgresSealed,
    OnMachinePostgres,
    OnMemory,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


def features(
    seed: int, keywords: tuple[tuple[str, float], ...] = (), model: str = "m1"
) -> TextFeatures:
    vector = np.random.default_rng(seed).normal(size=8).astype(np.float32)
    return TextFeatures(vector, keywords, model_id=model)


def same(got: TextFeatures, want: TextFeatures) -> bool:
    return (np.array_equal(got.vector, want.vector) and got.keywords == want.keywords
            and got.model_id == want.model_id)


class TextFeatureStoreContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has.

    Users are those of :data:`tests.contract.backends.KEYED_USERS`: the sealed adapter
    caches nothing for a user without a data key."""

    adapter: ClassVar[type]

    @pytest.fixture
    def store(self, stores: Stores) -> TextFeatureStore:
        assert isinstance(stores.text_features, self.adapter)
        return stores.text_features

    async def test_empty_cases(self, store: TextFeatureStore) -> None:
        assert await store.get_many([], "m") == {}
        assert await store.get_many([TextKey("u1", "e1", "d1")], "m") == {}
        await store.put_many({}, "m")  # nothing to do is not an error
        assert await store.forget_user("u1") == 0

    async def test_round_trip(self, store: TextFeatureStore) -> None:
        review = features(1, (("noir", 0.5), ("détective ✓", 0.25)))
        search = features(2)  # no keywords
        k1, k2 = TextKey("u1", "e1", "d1"), TextKey("u1", "e2", "d2")
        await store.put_many({k1: review, k2: search}, "m1")
        got = await store.get_many([k2, k1, TextKey("u1", "missing", "d")], "m1")
        assert set(got) == {k1, k2}
        assert same(got[k1], review) and same(got[k2], search)
        assert got[k1].vector.dtype == np.float32

    async def test_features_are_cached_under_their_own_model(
        self, store: TextFeatureStore
    ) -> None:
        """The model in the key keeps encoders' spaces apart: features one encoder made are
        never filed under another's id."""
        key = TextKey("u1", "e1", "d1")
        with pytest.raises(InvalidField, match="model_id"):
            await store.put_many({key: features(1, model="m1")}, "m2")
        assert await store.get_many([key], "m2") == {}
        await store.put_many({key: features(1, model="m2")}, "m2")
        assert (await store.get_many([key], "m2"))[key].model_id == "m2"

    async def test_entries_are_per_model_user_and_text(self, store: TextFeatureStore) -> None:
        key = TextKey("u1", "e1", "d1")
        await store.put_many({key: features(1)}, "m1")
        assert await store.get_many([key], "m2") == {}  # another model: a miss
        # Event ids are unique per user only, and a reused id with another text (an event the
        # log refused, then a different one) must not inherit the cached features.
        assert await store.get_many([TextKey("u2", "e1", "d1")], "m1") == {}
        assert await store.get_many([TextKey("u1", "e1", "other")], "m1") == {}
        await store.put_many({TextKey("u2", "e1", "d1"): features(2)}, "m1")
        got = await store.get_many([key, TextKey("u2", "e1", "d1")], "m1")
        assert same(got[key], features(1)) and same(got[TextKey("u2", "e1", "d1")], features(2))

    async def test_putting_again_keeps_the_first(self, store: TextFeatureStore) -> None:
        key = TextKey("u1", "e1", "d1")
        await store.put_many({key: features(1)}, "m1")
        await store.put_many({key: features(9), TextKey("u1", "e2", "d2"): features(2)}, "m1")
        got = await store.get_many([key, TextKey("u1", "e2", "d2")], "m1")
        assert same(got[key], features(1)) and len(got) == 2

    async def test_forget_user_drops_only_theirs(self, store: TextFeatureStore) -> None:
        await store.put_many({TextKey("u1", f"e{i}", "d"): features(i) for i in range(3)}, "m1")
        await store.put_many({TextKey("u1", "e0", "d"): features(0, model="m2")}, "m2")
        await store.put_many({TextKey("u2", "e0", "d"): features(7)}, "m1")
        assert await store.forget_user("u1") == 4  # every model's entries
        assert await store.get_many([TextKey("u1", "e0", "d")], "m1") == {}
        assert await store.get_many([TextKey("u1", "e0", "d")], "m2") == {}
        assert len(await store.get_many([TextKey("u2", "e0", "d")], "m1")) == 1
        assert await store.forget_user("u1") == 0
        # The cache works for the user again afterwards (an erased id that comes back).
        await store.put_many({TextKey("u1", "e0", "d"): features(5)}, "m1")
        got = await store.get_many([TextKey("u1", "e0", "d")], "m1")
        assert same(got[TextKey("u1", "e0", "d")], features(5))


class TestInMemory(OnMemory, TextFeatureStoreContract):
    adapter = InMemoryTextFeatureStore


class TestEmbeddedPostgres(OnEmbeddedPostgres, TextFeatureStoreContract):
    adapter = PostgresTextFeatureStore


class TestEmbeddedPostgresSealed(OnEmbeddedPostgresSealed, TextFeatureStoreContract):
    adapter = PostgresTextFeatureStore


class TestMachinePostgres(OnMachinePostgres, TextFeatureStoreContract):
    adapter = PostgresTextFeatureStore
