"""One suite for every ItemSpaceStore: memory and embedded Postgres."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.collaborative import ItemSpace
from portrait.tuned_config import CollabSettings
from storage.item_spaces import KEEP_VERSIONS, InMemoryItemSpaceStore, PostgresItemSpaceStore

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    if request.param == "memory":
        return InMemoryItemSpaceStore()
    return PostgresItemSpaceStore(request.getfixturevalue("embedded_engine"))


def space(seed: int, n: int = 4, dim: int = 3) -> ItemSpace:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    return ItemSpace(0, tuple(f"i{seed}-{k}" for k in range(n)), vectors, 100 + seed, 50 + seed,
                     CollabSettings(dim=dim, min_count=1))


async def test_empty_store_has_no_space(store) -> None:
    assert await store.latest() is None
    assert await store.latest_version() == 0


async def test_saved_spaces_get_growing_versions_and_round_trip(store) -> None:
    first = await store.save(space(1))
    second = await store.save(space(2))
    assert 0 < first.version < second.version
    got = await store.latest()
    assert got is not None and got.version == second.version
    assert await store.latest_version() == second.version  # without loading the vectors
    assert got.item_ids == second.item_ids and got.settings == second.settings
    assert (got.trained_through, got.events) == (102, 52)
    assert np.array_equal(got.vectors, second.vectors)


async def test_only_the_newest_versions_are_kept(store) -> None:
    for seed in range(KEEP_VERSIONS + 2):
        last = await store.save(space(seed))
    assert (await store.latest()).version == last.version
