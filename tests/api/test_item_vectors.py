"""``POST /v1/items`` and ``PUT /v1/items/{id}`` with items' own vectors, over the real
routes and in-process shards, on the memory store and the embedded Postgres: a vector is
stored as given, one bad item refuses the whole batch naming its field (422), an oversized
batch is a 413, and a refused batch leaves the store as it was."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import pytest_asyncio

from actors.text_features import ThreadedEncoder
from portrait.catalog import vector_to_b64
from portrait.ports import CatalogStore
from serve.api import models as m
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
DIM = 32
MODEL = "test/hashing-encoder"  # HashingEncoder's model id: the active encoder here
_names = itertools.count()


def unit(seed: int, dim: int = DIM) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim)
    return v / np.linalg.norm(v)


def item(k: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"v{k}", "title": f"Item {k}", "tags": ["T"], **extra}


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        url = f"memory://vectors-{next(_names)}"
        yield url
        forget_memory(url)
        return
    request.getfixturevalue("embedded_engine")
    yield request.getfixturevalue("embedded_pg_url")


@pytest_asyncio.fixture(loop_scope="session")
async def system(store_url: str) -> AsyncIterator[InProcessSystem]:
    sys = auth.system(Settings(shards=2, max_batch_events=50), store_url,
                      ThreadedEncoder(HashingEncoder(dim=DIM)))
    try:
        yield sys
    finally:
        await sys.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(system: InProcessSystem) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
        yield client


async def state(store: CatalogStore) -> tuple[int, dict[str, str], bytes]:
    got = await store.vectors(MODEL, DIM)
    return await store.version(), await store.titles(), np.asarray(got.matrix).tobytes()


async def test_given_vectors_are_stored_and_ranked_with(
    http: httpx.AsyncClient, system: InProcessSystem
) -> None:
    near, far = unit(1), unit(2)
    items = [item(0, vector=near.tolist(), vector_model=MODEL),
             item(1, vector_b64=vector_to_b64(near + 0.01 * unit(3)), vector_model=MODEL),
             item(2, vector_b64=vector_to_b64(far), vector_model=MODEL),
             item(3)]
    resp = await http.post("/v1/items", json={"items": items})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    m.UpsertResponse.model_validate(body)
    assert (body["inserted"], body["given"], body["encoded"]) == (4, 3, 1)
    index = await system.context.catalog.load_index()
    row = index.ids.index("v2")
    assert np.allclose(index.matrix[row], far, atol=1e-6)
    again = (await http.post("/v1/items", json={"items": items})).json()
    assert (again["unchanged"], again["given"], again["encoded"]) == (4, 0, 0)
    put = await http.put("/v1/items/v9", json={"title": "Nine", "vector": far.tolist(),
                                               "vector_model": MODEL})
    assert put.status_code == 200 and put.json()["given"] == 1, put.text
    # The brought vectors are the item space: a buyer of v0 is shown v1 (its neighbour) first.
    view = {"type": "purchase", "event_id": "e1", "user_id": "u", "occurred_at": 1_700_000_000,
            "item_id": "v0"}
    assert (await http.post("/v1/events", json={"events": [view]})).status_code == 200
    recs = (await http.get("/v1/users/u/recommendations", params={"k": 2})).json()
    assert recs["items"][0]["item_id"] == "v1", recs


@pytest.mark.parametrize(("bad", "status", "field"), [
    (item(3, vector=unit(0, DIM + 1).tolist(), vector_model=MODEL), 422, "items[3].vector"),
    (item(3, vector_b64=vector_to_b64(unit(0, DIM - 1)), vector_model=MODEL), 422,
     "items[3].vector_b64"),
    (item(3, vector=unit(0).tolist(), vector_model="shop/own-model"), 422,
     "items[3].vector_model"),
    (item(3, vector=[0.0] * DIM, vector_model=MODEL), 422, "items[3].vector"),
    (item(3, vector_b64=vector_to_b64(np.full(DIM, np.nan)), vector_model=MODEL), 422,
     "items[3].vector_b64"),
    (item(3, vector=unit(0).tolist()), 422, "items[3].vector_model"),
    (item(1), 422, "items[3].id"),  # a duplicate id
    (item(3, vector=[1.0, "x"], vector_model=MODEL), 422, "items[3].vector[1]"),
])
async def test_one_bad_item_refuses_the_whole_batch(
    http: httpx.AsyncClient, system: InProcessSystem, bad: dict[str, Any], status: int,
    field: str,
) -> None:
    first = [item(k, title=f"First {k}") for k in range(2)]
    assert (await http.post("/v1/items", json={"items": first})).status_code == 200
    store = system.context.stores.catalog_store
    before = await state(store)
    # Good items (changed ones, new ones, a given vector) around the bad one: none is written.
    batch = [item(0, title="Changed 0", vector=unit(5).tolist(), vector_model=MODEL),
             item(1, title="Changed 1"), item(2), bad, *[item(k) for k in range(4, 12)]]
    resp = await http.post("/v1/items", json={"items": batch})
    assert resp.status_code == status, resp.text
    assert resp.json()["field"] == field, resp.text
    assert await state(store) == before
    assert (await http.get("/v1/items/v2")).status_code == 404


async def test_an_oversized_batch_is_a_413_and_writes_nothing(
    http: httpx.AsyncClient, system: InProcessSystem
) -> None:
    store = system.context.stores.catalog_store
    before = await state(store)
    batch = [item(k, vector_b64=vector_to_b64(unit(k)), vector_model=MODEL) for k in range(51)]
    resp = await http.post("/v1/items", json={"items": batch})
    assert resp.status_code == 413 and resp.json()["field"] == "items", resp.text
    assert await state(store) == before
