"""The item catalog over both catalog stores (memory and embedded Postgres), and the
text-feature cache on Postgres."""

from __future__ import annotations

import numpy as np
import pytest

from actors.text_features import ThreadedEncoder
from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from portrait.events import ItemDismissed, ItemViewed
from portrait.ports import TextFeatures, TextKey
from storage.catalog import ItemCatalog
from storage.memory import InMemoryEventLog
from storage.memory_catalog import InMemoryCatalogStore
from storage.postgres import PostgresEventLog
from storage.postgres_catalog import PostgresCatalogStore
from storage.text_features import PostgresTextFeatureStore
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEMS = [
    ItemRecord("1", "Alien (1979)", "A crew meets a monster in space.", ("Horror", "Sci-Fi")),
    ItemRecord("2", "Heat (1995)", "Cops and robbers in Los Angeles.", ("Crime",)),
    ItemRecord("3", "Amélie (2001)", "", ("Comedy", "Romance"), {"year": 2001}),
]


@pytest.fixture(params=["memory", "postgres"])
def backend(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """(event log, catalog store) of one backend, empty."""
    if request.param == "memory":
        log = InMemoryEventLog()
        return log, InMemoryCatalogStore(log)
    engine = request.getfixturevalue("embedded_engine")
    return PostgresEventLog(engine), PostgresCatalogStore(engine)


class CountingEncoder(ThreadedEncoder):
    def __init__(self, model_id: str = "test/hashing") -> None:
        super().__init__(HashingEncoder(dim=16, model_id=model_id))
        self.texts = 0

    async def encode(self, texts):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return await super().encode(texts)


async def test_upsert_is_idempotent_and_encodes_only_changes(backend) -> None:
    _, store = backend
    enc = CountingEncoder()
    catalog = ItemCatalog(store, enc, chunk_size=2)
    seen: list[int] = []
    first = await catalog.upsert(ITEMS, progress=seen.append)
    assert (first.inserted, first.encoded, sum(seen)) == (3, 3, 3)
    v1 = await store.version()
    again = await catalog.upsert(ITEMS)
    assert (again.unchanged, again.encoded, enc.texts) == (3, 0, 3)
    assert await store.version() == v1  # nothing written
    changed = ITEMS[1].__class__("2", "Heat (1995)", "A heist epic.", ("Crime",))
    result = await catalog.upsert([changed])
    assert (result.updated, result.encoded) == (1, 1)
    assert await store.version() > v1
    assert (await catalog.get("2")).description == "A heist epic."
    assert await catalog.get("nope") is None
    assert await store.titles() == {
        "1": "Alien (1979)", "2": "Heat (1995)", "3": "Amélie (2001)"
    }


async def test_duplicate_ids_in_one_call_are_refused(backend) -> None:
    catalog = ItemCatalog(backend[1], CountingEncoder())
    with pytest.raises(InvalidField) as err:
        await catalog.upsert([ITEMS[0], ITEMS[0]])
    assert err.value.field == "items[1].id"


async def test_model_change_reencodes(backend) -> None:
    _, store = backend
    await ItemCatalog(store, CountingEncoder("model-a")).upsert(ITEMS)
    enc_b = CountingEncoder("model-b")
    catalog_b = ItemCatalog(store, enc_b)
    assert len(await catalog_b.load_index()) == 0  # nothing embedded by model-b yet
    assert await catalog_b.stale_count() == 3
    assert await catalog_b.reencode() == 3
    index = await catalog_b.load_index()
    assert index.ids == ("1", "2", "3") and index.model_id == "model-b"
    assert index.tags(0) == ("Horror", "Sci-Fi")
    assert np.allclose(np.linalg.norm(index.matrix, axis=1), 1.0, atol=1e-5)


async def test_text_feature_cache_round_trips_per_model(embedded_engine) -> None:
    store = PostgresTextFeatureStore(embedded_engine)
    feats = TextFeatures(np.arange(4, dtype=np.float32), (("noir", 0.5), ("detective", 0.25)))
    e1, e2 = TextKey("u", "e1", "d1"), TextKey("u", "e2", "d2")
    await store.put_many({e1: feats}, "m1")
    await store.put_many({e1: feats}, "m1")  # idempotent
    got = await store.get_many([e1, e2], "m1")
    assert list(got) == [e1]
    assert np.array_equal(got[e1].vector, feats.vector) and got[e1].keywords == feats.keywords
    assert await store.get_many([e1], "m2") == {}
    # event ids are per user: another user's e1 is another entry
    assert await store.get_many([TextKey("v", "e1", "d1")], "m1") == {}


async def test_popularity_counts_positive_item_events(backend) -> None:
    log, store = backend
    await log.append("u1", [ItemViewed("a", "u1", 1.0, "1"), ItemViewed("b", "u1", 2.0, "2")])
    await log.append("u2", [ItemViewed("c", "u2", 3.0, "1"), ItemDismissed("d", "u2", 4.0, "2")])
    # positions 1..4; the dismissal (4) is not an interaction, so the counts cover through 3
    assert await store.interaction_counts() == ({"1": 2, "2": 1}, 3)
    # Counting on from a position adds exactly the later events: popularity is kept
    # incrementally by the publisher.
    assert await store.interaction_counts(after_position=2) == ({"1": 1}, 3)
    assert await store.interaction_counts(after_position=3) == ({}, 3)
    await log.append("u3", [ItemViewed("e", "u3", 5.0, "2")])
    assert await store.interaction_counts(after_position=3) == ({"2": 1}, 5)
