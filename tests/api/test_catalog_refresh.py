"""The ingress republishes what changed in the stores: the popularity prior follows the event
log without a retrain or a catalog change (before, it moved only when a view was republished
for one of those), and items written by another process reach the shards (before, a shard
that started during the first run's catalog import kept an empty catalog for good)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from actors.text_features import ThreadedEncoder
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
ITEMS = [{"id": i, "title": f"item {i}", "description": word, "tags": []}
         for i, word in zip("abcd", ["apple", "bridge", "cactus", "dolphin"], strict=True)]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    url = "memory://popularity-refresh"
    # No retrain is due in this test (10,000 events); the stores are checked every 0.2 s.
    settings = Settings(shards=2, retrain_every_events=10_000, catalog_refresh_s=0.2)
    system = auth.system(settings, url, ThreadedEncoder(HashingEncoder(dim=32)))
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
        assert (await client.post("/v1/items", json={"items": ITEMS})).status_code == 200
        yield client, system
    await system.close()
    forget_memory(url)


def views(user: str, item: str, t: float) -> list[dict[str, Any]]:
    return [{"type": "view", "event_id": f"{user}-{item}", "user_id": user, "occurred_at": t,
             "item_id": item}]


async def top_for_newcomer(http: httpx.AsyncClient, name: str) -> str:
    body = (await http.get(f"/v1/users/{name}/recommendations", params={"k": 1})).json()
    return str(body["items"][0]["item_id"])


async def test_new_users_get_what_is_popular_now(http: tuple[httpx.AsyncClient, Any]) -> None:
    client, system = http
    for item, users in (("c", 6), ("b", 2)):
        events = [e for u in range(users) for e in views(f"{item}-fan{u}", item, T0 + u)]
        assert (await client.post("/v1/events", json={"events": events})).status_code == 200
    for _ in range(50):  # the next refresh round republishes
        if await top_for_newcomer(client, "newcomer-1") == "c":
            break
        await asyncio.sleep(0.05)
    assert await top_for_newcomer(client, "newcomer-1") == "c"

    # Now "d" overtakes "c": the prior follows, still without a retrain.
    events = [e for u in range(10) for e in views(f"d-fan{u}", "d", T0 + 100 + u)]
    assert (await client.post("/v1/events", json={"events": events})).status_code == 200
    for _ in range(50):
        if await top_for_newcomer(client, "newcomer-2") == "d":
            break
        await asyncio.sleep(0.05)
    assert await top_for_newcomer(client, "newcomer-2") == "d"
    stats = (await client.get("/v1/item-space")).json()
    assert stats["retrains"] == 0 and stats["version"] == 0
    # Only popularity moved, so every shard kept the indexes it had built.
    views_now = {id(s._view().items) for s in system.shards}
    assert len(views_now) == 1


async def test_items_written_by_another_process_reach_the_shards(
    http: tuple[httpx.AsyncClient, Any],
) -> None:
    """What the first run's catalog import does: it writes the catalog store directly."""
    from portrait.catalog import ItemRecord
    from storage.stores import open_stores

    client, system = http
    stores = open_stores("memory://popularity-refresh")  # the same store, another opener
    await stores.catalog(ThreadedEncoder(HashingEncoder(dim=32))).upsert(
        [ItemRecord("z", "Zebra documentary", "stripes on the savanna")]
    )
    for _ in range(50):
        body = (await client.get("/v1/users/zed/recommendations", params={"k": 10})).json()
        if "z" in {i["item_id"] for i in body["items"]}:
            break
        await asyncio.sleep(0.05)
    assert "z" in {i["item_id"] for i in body["items"]}
