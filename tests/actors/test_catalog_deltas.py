"""Catalog deltas: an item upsert reaches the shards as the items that changed, on top of the
base they hold; compaction folds them into a new base; a failed build keeps what serves."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from actors.catalog_view import LocalCatalogChannel
from actors.catalog_view_builder import CatalogViewBuilder
from actors.dependencies import ConnectedEncoder
from actors.shard_service import ShardService, ShardSettings
from actors.text_features import ThreadedEncoder
from portrait import codec
from portrait.catalog import ItemRecord
from portrait.events import ItemViewed
from storage.stores import StoreFactory, Stores, forget_memory, open_stores
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = 1_700_000_000.0
WORDS = ["space ships", "love in paris", "a detective", "a heist", "deep sea", "old west",
         "robots", "a wedding"]
ITEMS = [ItemRecord(f"i{k}", f"Film {k}", f"about {w}", ("Drama",) if k % 2 else ("War",))
         for k, w in enumerate(WORDS)]


class Setup:
    def __init__(self, url: str) -> None:
        self.url = url
        self.stores: Stores = open_stores(url)
        self.encoder = ThreadedEncoder(HashingEncoder(dim=16))
        self.catalog = self.stores.catalog(self.encoder)
        self.channel = LocalCatalogChannel()
        self.builder = CatalogViewBuilder(self.catalog, self.stores.item_spaces, self.encoder,
                                          self.channel)
        self.shard = ShardService("s0", StoreFactory(url), ConnectedEncoder(self.encoder),
                                  self.channel, ShardSettings())

    async def ranked(self, user: str = "u") -> list[str]:
        await self.shard.refresh_catalog()
        return [r.item_id for r in (await self.shard.recommend(user, 8, 0.0, [], [])).items]

    async def close(self) -> None:
        await self.shard.close()
        forget_memory(self.url)


async def _whole(setup: Setup) -> list[str]:
    """What a view built whole from the same store ranks for the same user."""
    channel = LocalCatalogChannel()
    builder = CatalogViewBuilder(setup.catalog, setup.stores.item_spaces, setup.encoder,
                                 channel)
    await builder.publish()
    shard = ShardService("whole", StoreFactory(setup.url), ConnectedEncoder(setup.encoder),
                         channel, ShardSettings())
    try:
        await shard.refresh_catalog()
        return [r.item_id for r in (await shard.recommend("u", 8, 0.0, [], [])).items]
    finally:
        await shard.close()


async def _with_user(setup: Setup) -> None:
    events = [ItemViewed(f"e{k}", "u", T0 + k, f"i{k}") for k in (0, 2)]
    await setup.shard.ingest({"u": [codec.encode(e) for e in events]})


async def test_an_upsert_goes_out_as_a_delta_and_ranks_as_a_whole_view() -> None:
    setup = Setup("memory://catalog-deltas")
    try:
        await setup.catalog.upsert(ITEMS[:5])
        await setup.builder.publish()
        await _with_user(setup)
        base = await setup.ranked()
        assert setup.channel._view is not None and setup.channel._view.tail == 0

        changed = ItemRecord("i1", "Film 1 remastered", "about space ships", ("War",))
        await setup.catalog.upsert([*ITEMS[5:], changed])
        await setup.builder.publish()
        view = setup.channel._view
        assert view is not None
        assert view.items.n_base == 5 and view.tail == 4  # 3 new + 1 changed: no rebuild
        assert view.base_key != view.key
        assert view.title("i1") == "Film 1 remastered" and view.items.row("i1") >= 5
        ranked = await setup.ranked()
        assert ranked != base and {"i5", "i6", "i7"} & set(ranked)
        assert ranked.count("i1") <= 1  # the superseded row is never shown
        assert ranked == await _whole(setup)

        # Folded into a base of its own: the same rows in the same order (the superseded one
        # kept, marked), the same key, the same ranking from one matrix.
        assert await setup.builder.compact()
        compacted = setup.channel._view
        assert compacted is not None and compacted.tail == 0 and len(compacted.items) == 9
        assert compacted.key == view.key and compacted.base_key == compacted.key
        assert compacted.items.row("i1") == view.items.row("i1")
        assert list(compacted.items.alive) == list(view.items.alive)
        assert await setup.ranked() == ranked
        assert (await setup.shard.catalog_key()) == compacted.key
    finally:
        await setup.close()


async def test_an_item_upserted_during_a_compaction_is_served_meanwhile_and_kept() -> None:
    setup = Setup("memory://catalog-deltas-during")
    try:
        await setup.catalog.upsert(ITEMS[:4])
        await setup.builder.publish()
        await setup.catalog.upsert(ITEMS[4:6])
        await setup.builder.publish()
        await _with_user(setup)

        building = threading.Event()
        release = threading.Event()
        flatten = setup.builder._flatten

        def slow_flatten(view):  # type: ignore[no-untyped-def]
            building.set()
            assert release.wait(30)
            return flatten(view)

        setup.builder._flatten = slow_flatten  # type: ignore[method-assign]
        compaction = asyncio.ensure_future(setup.builder.compact())
        await asyncio.to_thread(building.wait, 30)
        await setup.catalog.upsert(ITEMS[6:])  # written while the base is being built
        await setup.builder.publish()  # a delta, not blocked by the build
        assert "i7" in await setup.ranked()
        release.set()
        assert await compaction
        view = setup.channel._view
        assert view is not None and view.items.n_base == 6  # the base as it was flattened
        assert view.tail == 2 and view.items.row("i7") is not None  # kept after it
        assert view.key == setup.builder.key
        assert "i7" in await setup.ranked()
    finally:
        await setup.close()


async def test_a_failed_compaction_leaves_the_grown_view_serving() -> None:
    setup = Setup("memory://catalog-deltas-failed")
    try:
        await setup.catalog.upsert(ITEMS[:4])
        await setup.builder.publish()
        await setup.catalog.upsert(ITEMS[4:])
        await setup.builder.publish()
        await _with_user(setup)
        before = setup.channel._view
        ranked = await setup.ranked()

        def broken(view):  # type: ignore[no-untyped-def]
            raise MemoryError("killed mid-build")

        setup.builder._flatten = broken  # type: ignore[method-assign]
        with pytest.raises(MemoryError):
            await setup.builder.compact()
        assert setup.channel._view is before and before is not None and before.tail == 4
        assert await setup.ranked() == ranked
        assert setup.builder.compaction_due(quiet_s=0.0)  # it is tried again
    finally:
        await setup.close()


async def test_an_unchanged_reupsert_publishes_no_rows() -> None:
    setup = Setup("memory://catalog-deltas-same")
    try:
        await setup.catalog.upsert(ITEMS)
        await setup.builder.publish()
        key = setup.builder.key
        await setup.catalog.upsert(ITEMS)  # nothing to write: the version does not move
        await setup.builder.publish()
        assert setup.builder.key == key
        view = setup.channel._view
        assert view is not None and view.tail == 0
        assert np.all(view.popularity == 0)
    finally:
        await setup.close()


async def test_a_catalog_large_enough_is_ranked_through_indexes_built_once() -> None:
    """The publisher builds the approximate indexes (in the background, after the view went
    out without them); the shard ranks through them, and rows a delta appends after the
    build are added to its copy and found."""
    from portrait.ann import AnnSettings

    setup = Setup("memory://catalog-deltas-ann")
    setup.builder = CatalogViewBuilder(setup.catalog, setup.stores.item_spaces, setup.encoder,
                                       setup.channel, ann=AnnSettings(exact_below=4))
    try:
        await setup.catalog.upsert(ITEMS[:6])
        await setup.builder.publish()
        await _with_user(setup)
        assert setup.channel._view is not None and not setup.channel._view.indexes
        assert setup.builder.compaction_due(quiet_s=3600.0)  # the indexes are missing
        assert await setup.builder.compact()
        view = setup.channel._view
        assert view is not None and set(view.indexes) == {"text"}
        assert not setup.builder.compaction_due(quiet_s=3600.0)
        through_index = await setup.ranked()
        assert through_index == await _whole(setup)  # 6 rows: the search covers them all

        await setup.catalog.upsert(ITEMS[6:])
        await setup.builder.publish()
        ranked = await setup.ranked()
        grown = setup.channel._view
        assert grown is not None and grown.tail == 2
        index = grown.vector_index("text")
        assert index is not None and len(index) == 8
        assert {"i6", "i7"} & set(ranked) and ranked == await _whole(setup)
    finally:
        await setup.close()


async def test_a_new_item_space_over_an_indexed_catalog_is_built_while_the_old_serves() -> None:
    """A retrain over a catalog ranked through indexes: the new view and its indexes are
    built in the background; meanwhile the old view serves and takes deltas, and the new one
    goes out with them."""
    from portrait.ann import AnnSettings
    from portrait.item_space import CollabSettings, ItemSpace

    setup = Setup("memory://catalog-deltas-rebuild")
    setup.builder = CatalogViewBuilder(setup.catalog, setup.stores.item_spaces, setup.encoder,
                                       setup.channel, alphas=(0.5,),
                                       ann=AnnSettings(exact_below=4))
    try:
        await setup.catalog.upsert(ITEMS[:6])
        await setup.builder.publish()
        assert await setup.builder.compact()  # the indexes
        old = setup.channel._view
        assert old is not None and old.space_version == 0 and old.indexes

        vectors = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
        await setup.stores.item_spaces.save(ItemSpace(0, ("i0", "i1", "i2"), vectors, 1, 10,
                                                      CollabSettings()))
        await setup.builder.publish()
        assert setup.channel._view is old  # not replaced by a view without indexes
        assert setup.builder.rebuild_wanted and setup.builder.status()["rebuild_pending"]
        await setup.catalog.upsert(ITEMS[6:7])  # a write while the rebuild is due
        await setup.builder.publish()
        assert setup.channel._view is not None and setup.channel._view.tail == 1

        assert await setup.builder.rebuild()
        new = setup.channel._view
        assert new is not None and new.space_version >= 1 and set(new.indexes) == {"text", 0.5}
        assert new.items.row("i6") is not None and not setup.builder.rebuild_wanted
        await _with_user(setup)
        assert await setup.ranked()
    finally:
        await setup.close()
