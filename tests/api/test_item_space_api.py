"""Collaborative item spaces through the API, in process: retrain, publish, rank with them."""

from __future__ import annotations

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
# Eight items with unrelated texts: only co-occurrence can tie "a" to "h".
ITEMS = [{"id": i, "title": f"{i} {word}", "description": word, "tags": []}
         for i, word in zip("abcdefgh", ["apple", "bridge", "cactus", "dolphin", "engine",
                                          "falcon", "guitar", "harbor"], strict=True)]


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[httpx.AsyncClient]:
    url = "memory://item-space-api"
    # The shipped default config: it ranks with 93% collaborative vectors once they exist.
    system = auth.system(Settings(shards=2, retrain_every_events=10_000), url,
                        ThreadedEncoder(HashingEncoder(dim=32)))
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
        assert (await client.post("/v1/items", json={"items": ITEMS})).status_code == 200
        yield client
    await system.close()
    forget_memory(url)


def views(user: str, items: str, t: float) -> list[dict[str, Any]]:
    return [{"type": "view", "event_id": f"{user}-{i}", "user_id": user, "occurred_at": t + k,
             "item_id": i} for k, i in enumerate(items)]


async def test_too_little_data_keeps_text_vectors_and_says_why(http: httpx.AsyncClient) -> None:
    await http.post("/v1/events", json={"events": views("lonely", "c", T0)})
    stats = (await http.post("/v1/item-space/retrain")).json()
    assert stats["enabled"] and stats["version"] == 0 and stats["skipped"] == 1
    assert "at least 2 items" in stats["last_error"]


async def test_a_retrain_is_published_and_changes_the_ranking(http: httpx.AsyncClient) -> None:
    events = []
    for u in range(16):  # "a" and "h" go together; "c" and "d" are twice as popular
        pair = "ah" if u < 4 else "cd" if u < 12 else "ef"
        events += views(f"u{u}", pair, T0 + 100 * u)
    assert (await http.post("/v1/events", json={"events": events})).status_code == 200
    await http.post("/v1/events", json={"events": views("newbie", "a", T0 + 5000)})
    before = (await http.get("/v1/users/newbie/recommendations",
                             params={"k": 3, "exclude": "a"})).json()
    assert before["items"][0]["item_id"] != "h"  # text and popularity alone do not find it
    stats = (await http.post("/v1/item-space/retrain")).json()
    assert stats["version"] == 1 and stats["retrains"] == 1 and stats["last_items"] >= 2
    after = (await http.get("/v1/users/newbie/recommendations",
                            params={"k": 3, "exclude": "a"})).json()
    assert after["items"][0]["item_id"] == "h", (before, after)
    info = (await http.get("/v1/item-space")).json()
    assert info["version"] == 1 and info["new_events"] == 0
    text = (await http.get("/metrics")).text
    assert "portrait_item_space_version 1.0" in text
