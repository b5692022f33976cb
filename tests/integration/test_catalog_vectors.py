"""Items with their own vectors in the item catalog, over both catalog stores (memory and
embedded Postgres): stored as given and not encoded, idempotent on re-import, checked whole
before any write."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from actors.text_features import ThreadedEncoder
from portrait.catalog import ItemRecord, ItemVector
from portrait.errors import InvalidField
from portrait.ports import CatalogStore
from storage.catalog import ItemCatalog
from storage.memory import InMemoryEventLog
from storage.memory_catalog import InMemoryCatalogStore
from storage.postgres_catalog import PostgresCatalogStore
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")

DIM = 16
MODEL = "test/hashing"
ITEMS = [ItemRecord(f"i{k}", f"Item {k}", f"about thing {k}", ("Tag",)) for k in range(5)]


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> CatalogStore:
    if request.param == "memory":
        return InMemoryCatalogStore(InMemoryEventLog())
    return PostgresCatalogStore(request.getfixturevalue("embedded_engine"))


class CountingEncoder(ThreadedEncoder):
    def __init__(self) -> None:
        super().__init__(HashingEncoder(dim=DIM, model_id=MODEL))
        self.texts = 0

    async def encode(self, texts):  # type: ignore[no-untyped-def]
        self.texts += len(texts)
        return await super().encode(texts)


def vec(seed: int, dim: int = DIM, model: str = MODEL) -> ItemVector:
    return ItemVector(np.random.default_rng(seed).normal(size=dim), model)


async def snapshot(store: CatalogStore) -> tuple[int, dict[str, str], list[str], bytes]:
    got = await store.vectors(MODEL, DIM)
    return (await store.version(), await store.titles(), got.ids,
            np.asarray(got.matrix, "<f4").tobytes())


async def test_given_vectors_are_stored_as_given_and_not_encoded(store: CatalogStore) -> None:
    enc = CountingEncoder()
    catalog = ItemCatalog(store, enc, chunk_size=2)
    given: Sequence[ItemVector | None] = [vec(0), None, vec(2), None, vec(4)]
    first = await catalog.upsert(ITEMS, vectors=given)
    assert (first.inserted, first.encoded, first.given, enc.texts) == (5, 2, 3, 2)
    index = await catalog.load_index()
    assert index.ids == tuple(r.item_id for r in ITEMS)
    for row, v in enumerate(given):
        if v is not None:
            assert np.allclose(index.matrix[row], v.values, atol=1e-6)
    version = await store.version()
    again = await catalog.upsert(ITEMS, vectors=given)  # the same import: writes nothing
    assert (again.unchanged, again.encoded, again.given, enc.texts) == (5, 0, 0, 2)
    assert await store.version() == version
    # Without vectors, an unchanged text keeps the vector it was given.
    plain = await catalog.upsert(ITEMS)
    assert (plain.unchanged, plain.encoded) == (5, 0)
    # A new vector for the same text is written; a changed text without one is encoded.
    changed = ItemRecord("i1", "Item 1", "now about something else", ("Tag",))
    result = await catalog.upsert([ITEMS[0], changed], vectors=[vec(99), None])
    assert (result.updated, result.given, result.encoded) == (2, 1, 1)
    assert np.allclose((await catalog.load_index()).matrix[0], vec(99).values, atol=1e-6)


@pytest.mark.parametrize(("vectors", "field"), [
    ([None, None, None, vec(3, dim=DIM + 1), None], "items[3].vector"),
    ([None, vec(1, model="someone/else"), None, None, None], "items[1].vector_model"),
])
async def test_a_vector_that_does_not_fit_refuses_the_whole_call(
    store: CatalogStore, vectors: list[ItemVector | None], field: str
) -> None:
    catalog = ItemCatalog(store, CountingEncoder(), chunk_size=2)
    await catalog.upsert(ITEMS[:2])
    before = await snapshot(store)
    # The fault is in the second chunk: the first is not written either.
    changed = [ItemRecord(r.item_id, r.title + " (new)") for r in ITEMS]
    with pytest.raises(InvalidField) as err:
        await catalog.upsert(changed, vectors=vectors)
    assert err.value.field == field
    assert await snapshot(store) == before


async def test_a_duplicate_late_in_the_batch_writes_nothing(store: CatalogStore) -> None:
    catalog = ItemCatalog(store, CountingEncoder(), chunk_size=2)
    before = await snapshot(store)
    with pytest.raises(InvalidField) as err:
        await catalog.upsert([*ITEMS, ITEMS[0]], names="rows[{i}].")
    assert err.value.field == "rows[5].id"
    assert await snapshot(store) == before


class FailsOnSecondCall(CountingEncoder):
    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        if self.texts:
            raise ConnectionError("the encoder went away")
        out: np.ndarray = await super().encode(texts)  # type: ignore[no-untyped-call]
        return out


async def test_an_atomic_call_whose_encoder_fails_midway_writes_nothing(
    store: CatalogStore,
) -> None:
    before = await snapshot(store)
    catalog = ItemCatalog(store, FailsOnSecondCall(), chunk_size=2)
    with pytest.raises(ConnectionError):  # an API batch: the first chunk is not kept either
        await catalog.upsert(ITEMS, vectors=[vec(0), None, None, None, None], atomic=True)
    assert await snapshot(store) == before
    with pytest.raises(ConnectionError):  # an import: the chunk it finished is kept
        await ItemCatalog(store, FailsOnSecondCall(), chunk_size=2).upsert(ITEMS)
    assert sorted(await store.titles()) == ["i0", "i1"]
