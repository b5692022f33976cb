"""One contract for every CatalogStore adapter (see portrait.ports): in memory, on the
embedded Postgres and on the machine's Postgres (skipped if unreachable).

Popularity and the erasure count are read from the event log and eraser of the same backend,
so those tests write through them."""

from __future__ import annotations

from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest

from portrait.catalog import ItemRecord, item_text
from portrait.events import ItemDismissed, ItemPurchased, ItemViewed
from portrait.ports import CatalogStore, StoredItem
from storage.memory_catalog import InMemoryCatalogStore
from storage.postgres_catalog import PostgresCatalogStore
from storage.stores import Stores
from tests.contract.backends import OnEmbeddedPostgres, OnMachinePostgres, OnMemory

pytestmark = pytest.mark.asyncio(loop_scope="session")

ALIEN = ItemRecord("1", "Alien (1979)", "A crew meets a monster.", ("Horror", "Sci-Fi"))
HEAT = ItemRecord("2", "Heat (1995)", "", ("Crime",), {"year": 1995, "rated": "R",
                                                      "score": 8.5, "classic": True})
AMELIE = ItemRecord("3", "Amélie (2001) ✓", "Paris.", ())


def stored(record: ItemRecord, seed: int, model: str = "m1", dim: int = 4) -> StoredItem:
    vector = np.random.default_rng(seed).normal(size=dim).astype(np.float32) * 3  # unnormalised
    return StoredItem(record, vector, model)


class CatalogStoreContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has."""

    adapter: ClassVar[type]

    @pytest.fixture
    def store(self, stores: Stores) -> CatalogStore:
        assert isinstance(stores.catalog_store, self.adapter)
        return stores.catalog_store

    async def test_empty_catalog(self, store: CatalogStore) -> None:
        assert await store.version() == 0
        assert await store.existing([]) == {}
        assert await store.existing(["1"]) == {}
        assert await store.get("1") is None
        assert await store.not_embedded_by("m1") == []
        assert await store.titles() == {}
        empty = await store.vectors("m1", 4)
        assert empty.ids == [] and empty.tags == [] and empty.matrix.shape == (0, 4)
        assert await store.interaction_counts() == ({}, 0)
        assert await store.interaction_counts(after_position=7) == ({}, 7)
        assert await store.erasure_count() == 0
        await store.write([])  # nothing to write is not an error, and no new version
        assert await store.version() == 0

    async def test_round_trip(self, store: CatalogStore) -> None:
        await store.write([stored(ALIEN, 1), stored(HEAT, 2), stored(AMELIE, 3, model="m2")])
        assert await store.version() > 0
        for record in (ALIEN, HEAT, AMELIE):
            got = await store.get(record.item_id)
            assert got == record and dict(got.attributes) == dict(record.attributes)
        assert await store.existing(["3", "1", "nope"]) == {
            "1": (item_text(ALIEN), "m1"), "3": (item_text(AMELIE), "m2")}
        assert await store.titles() == {"1": ALIEN.title, "2": HEAT.title, "3": AMELIE.title}

    async def test_vectors_of_one_model_ordered_by_id_as_stored(self, store: CatalogStore
                                                                ) -> None:
        items = [stored(HEAT, 2), stored(AMELIE, 3, model="m2"), stored(ALIEN, 1)]
        await store.write(items)
        got = await store.vectors("m1", 4)
        assert got.ids == ["1", "2"]
        assert got.tags == [("Horror", "Sci-Fi"), ("Crime",)]
        assert got.matrix.dtype == np.float32
        assert np.array_equal(got.matrix, np.stack([items[2].vector, items[0].vector]))
        assert (await store.vectors("m2", 4)).ids == ["3"]
        assert (await store.vectors("other", 4)).matrix.shape == (0, 4)

    async def test_write_replaces_and_bumps_the_version(self, store: CatalogStore) -> None:
        await store.write([stored(ALIEN, 1), stored(HEAT, 2)])
        before = await store.version()
        changed = ItemRecord("1", "Alien (1979)", "In space no one can hear you scream.",
                             ("Horror",), {"year": 1979})
        await store.write([stored(changed, 9, model="m2")])
        assert await store.version() > before
        assert await store.get("1") == changed
        assert await store.existing(["1"]) == {"1": (item_text(changed), "m2")}
        assert [r.item_id for r in await store.not_embedded_by("m2")] == ["2"]
        assert sorted(r.item_id for r in await store.not_embedded_by("m1")) == ["1"]
        assert (await store.vectors("m1", 4)).ids == ["2"]
        replaced = await store.vectors("m2", 4)
        assert np.array_equal(replaced.matrix[0], stored(changed, 9).vector)

    async def test_changed_since_returns_what_was_written_after_a_version(
            self, store: CatalogStore) -> None:
        await store.write([stored(ALIEN, 1), stored(HEAT, 2)])
        seen = await store.version()
        assert (await store.changed_since(0, "m1", 4)).ids == ["1", "2"]
        changed = replace(HEAT, title="Heat (director's cut)")
        await store.write([stored(changed, 5), stored(AMELIE, 3), stored(ALIEN, 9, model="m2")])
        got = await store.changed_since(seen, "m1", 4)
        # The commit skew may bring back items written just before the version (a reader
        # compares contents); what was written after it is always there, as written.
        assert {"2", "3"} <= set(got.ids) and "1" not in got.ids  # "1" is now m2's
        row = got.ids.index("2")
        assert got.titles[row] == "Heat (director's cut)" and got.tags[row] == ("Crime",)
        assert np.array_equal(got.matrix[row], stored(changed, 5).vector)
        assert got.stamps[row] > 0 and got.matrix.dtype == np.float32
        assert (await store.changed_since(await store.version(), "m3", 4)).ids == []

    async def test_popularity_counts_positive_item_events(self, stores: Stores,
                                                          store: CatalogStore) -> None:
        log = stores.events
        await log.append("u1", [ItemViewed("a", "u1", 1.0, "1"), ItemViewed("b", "u1", 2.0, "2")])
        await log.append("u2", [ItemViewed("c", "u2", 3.0, "1"),
                                ItemDismissed("d", "u2", 4.0, "2")])
        positions = [r.position for r in await log.read_all()]
        # The dismissal is not an interaction, so the counts cover through the third event.
        assert await store.interaction_counts() == ({"1": 2, "2": 1}, positions[2])
        # Counting on from a position adds exactly the later events: popularity is kept
        # incrementally by the publisher.
        assert await store.interaction_counts(positions[1]) == ({"1": 1}, positions[2])
        assert await store.interaction_counts(positions[2]) == ({}, positions[2])
        await log.append("u3", [ItemPurchased("e", "u3", 5.0, "2")])
        last = (await log.read("u3"))[0].position
        assert await store.interaction_counts(positions[2]) == ({"2": 1}, last)

    async def test_an_erased_user_leaves_popularity(self, stores: Stores,
                                                    store: CatalogStore) -> None:
        await stores.events.append("u1", [ItemViewed("a", "u1", 1.0, "1"),
                                          ItemViewed("b", "u1", 2.0, "2")])
        await stores.events.append("u2", [ItemViewed("c", "u2", 3.0, "1")])
        assert await stores.eraser.erase("u1", "test", 10.0) is not None
        assert await store.erasure_count() == 1
        counts, _ = await store.interaction_counts()
        assert counts == {"1": 1}


class TestInMemory(OnMemory, CatalogStoreContract):
    adapter = InMemoryCatalogStore


class TestEmbeddedPostgres(OnEmbeddedPostgres, CatalogStoreContract):
    adapter = PostgresCatalogStore


class TestMachinePostgres(OnMachinePostgres, CatalogStoreContract):
    adapter = PostgresCatalogStore
