"""A shard across an encoder switch: it ranks in its view's space until the new view
arrives, then folds its users' text again in the new one; never a mix, never a failure."""

from __future__ import annotations

import pytest

from actors.catalog_view import LocalCatalogChannel
from actors.catalog_view_builder import CatalogViewBuilder
from actors.dependencies import ConnectedEncoder
from actors.encoder_switch import EncoderSwitch
from actors.shard_service import ShardService, ShardSettings
from portrait import codec
from portrait.catalog import ItemRecord
from portrait.encoder_versions import EncoderVersion
from portrait.events import ItemViewed, ReviewWritten, SearchPerformed
from storage.stores import StoreFactory, forget_memory, open_stores
from tests.versioned_encoder import BASE_MODEL, VersionedHashing

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEMS = [ItemRecord(f"i{k}", f"Film {k}", f"about {w}", ("Drama",))
         for k, w in enumerate(["space ships", "love in paris", "a detective", "a heist"])]
T0 = 1_700_000_000.0


async def test_a_shard_refolds_text_in_the_new_space_and_keeps_serving() -> None:
    url = "memory://shard-encoder-switch"
    stores = open_stores(url)
    encoder = VersionedHashing()
    channel = LocalCatalogChannel()
    builder = CatalogViewBuilder(stores.catalog(encoder), stores.item_spaces, encoder, channel)
    shard = ShardService("s0", StoreFactory(url), ConnectedEncoder(encoder), channel,
                         ShardSettings())
    try:
        await stores.catalog(encoder).upsert(ITEMS)
        await builder.publish()
        events = [ItemViewed("e1", "u", T0, "i0"),
                  ReviewWritten("e2", "u", T0 + 1, "i0", text="loved the space ships"),
                  SearchPerformed("e3", "u", T0 + 2, query="detective story")]
        await shard.ingest({"u": [codec.encode(e) for e in events]})
        before = await shard.recommend("u", 3, 0.0, [], [])
        assert before.items

        target = await stores.encoder_versions.register(EncoderVersion(
            0, "tuned", "test/tuned", BASE_MODEL, "all-minilm-l6-v2", "/nowhere", 16))
        switch = EncoderSwitch(stores, encoder, stores.catalog(encoder).base_encoder())
        await switch.switch(target)
        # Switched at rest, not yet published: the shard still ranks in the old space, and
        # a new text event is encoded under its view's (old) encoder.
        more = [SearchPerformed("e4", "u", T0 + 3, query="paris love")]
        await shard.ingest({"u": [codec.encode(e) for e in more]})
        old_texts = len(encoder.texts.get("test/tuned", []))
        assert (await shard.recommend("u", 3, 0.0, [], [])).items
        assert len(encoder.texts.get("test/tuned", [])) == old_texts

        await builder.publish()
        await shard.refresh_catalog()
        after = await shard.recommend("u", 3, 0.0, [], [])
        assert after.items
        host = await shard._ready()  # reaching in: the state the recommendation used
        state = await host.state("u")
        assert state.text_model == "test/tuned" and state.last_seq == 4
        # The text missed by the migration (e4, folded under the old view) was encoded now.
        assert "paris love" in encoder.texts["test/tuned"]
    finally:
        await shard.close()
        forget_memory(url)
