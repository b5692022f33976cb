"""One contract for every ItemSpaceStore adapter (see portrait.ports): in memory, on the
embedded Postgres and on the machine's Postgres (skipped if unreachable)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np
import pytest

from portrait.item_space import CollabSettings, ItemSpace
from portrait.ports import ItemSpaceStore
from storage.item_spaces import KEEP_VERSIONS, InMemoryItemSpaceStore, PostgresItemSpaceStore
from storage.stores import Stores
from tests.contract.backends import OnEmbeddedPostgres, OnMachinePostgres, OnMemory

pytestmark = pytest.mark.asyncio(loop_scope="session")


def space(seed: int, n: int = 4, dim: int = 3) -> ItemSpace:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return ItemSpace(0, tuple(f"i{seed}-{k}" for k in range(n)), vectors, 100 + seed, 50 + seed,
                     CollabSettings(dim=dim, min_count=1))


class ItemSpaceStoreContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has."""

    adapter: ClassVar[type]

    @pytest.fixture
    def store(self, stores: Stores) -> ItemSpaceStore:
        assert isinstance(stores.item_spaces, self.adapter)
        return stores.item_spaces

    async def test_empty_store_has_no_space(self, store: ItemSpaceStore) -> None:
        assert await store.latest() is None
        assert await store.latest_version() == 0

    async def test_saved_spaces_get_growing_versions_and_round_trip(
            self, store: ItemSpaceStore) -> None:
        first = await store.save(space(1))
        second = await store.save(space(2, n=5, dim=7))
        assert 0 < first.version < second.version
        got = await store.latest()
        assert got is not None and got.version == second.version
        assert await store.latest_version() == second.version  # without loading the vectors
        assert got.item_ids == second.item_ids and got.settings == second.settings
        assert (got.trained_through, got.events) == (102, 52)
        assert got.vectors.shape == (5, 7) and np.array_equal(got.vectors, second.vectors)

    async def test_the_ranker_is_stored_with_its_space(self, store: ItemSpaceStore) -> None:
        # Opaque bytes, NULs and high bytes included; None (no ranker trained) stays None.
        ranker = b"\x00ranker\xff" * 3
        with_ranker = await store.save(dataclasses.replace(space(1), ranker=ranker))
        got = await store.latest()
        assert got is not None and got.version == with_ranker.version
        assert got.ranker == ranker and isinstance(got.ranker, bytes)
        await store.save(space(2))
        got = await store.latest()
        assert got is not None and got.ranker is None

    async def test_only_the_newest_versions_are_kept(self, store: ItemSpaceStore) -> None:
        saved = [await store.save(space(seed)) for seed in range(KEEP_VERSIONS + 2)]
        latest = await store.latest()
        assert latest is not None and latest.version == saved[-1].version
        assert latest.item_ids == space(KEEP_VERSIONS + 1).item_ids


class TestInMemory(OnMemory, ItemSpaceStoreContract):
    adapter = InMemoryItemSpaceStore


class TestEmbeddedPostgres(OnEmbeddedPostgres, ItemSpaceStoreContract):
    adapter = PostgresItemSpaceStore


class TestMachinePostgres(OnMachinePostgres, ItemSpaceStoreContract):
    adapter = PostgresItemSpaceStore
