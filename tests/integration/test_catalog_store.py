"""The item catalog over both catalog stores (memory and embedded Postgres). The stores'
own contract, popularity counts included, is tests/contract/test_catalog_store_contract.py."""

from __future__ import annotations

import numpy as np
import pytest

from actors.text_features import ThreadedEncoder
from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from storage.catalog import ItemCatalog
from storage.memory import InMemoryEventLog
from storage.memory_catalog import InMemoryCatalogStore
from storage.postgres import PostgresEventLog
from storage.postgres_catalog import PostgresCatalogStore
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
    seen: list[tuple[int, int]] = []
    first = await catalog.upsert(ITEMS, progress=lambda done, total: seen.append((done, total)))
    assert (first.inserted, first.encoded, seen[-1]) == (3, 3, (3, 3))
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
