"""The learned ranker through the API, in process: a retrain trains it with the item space, the
shards rank with it and say so (response and impression); the blend serves users it cannot
rank for, and everyone while there is too little data for one."""

from __future__ import annotations

import dataclasses
import logging
import pickle
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgpack
import numpy as np
import pytest
import pytest_asyncio

from actors.catalog_view import CatalogView
from actors.text_features import ThreadedEncoder
from portrait.learned_ranker import FEATURES_VERSION
from serve.api import models as m
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.api.test_api_in_process import check_schema
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
WORDS = ["space", "horse", "kitchen", "garden"]
# Four themes of six items each; a user walks one theme's items in order.
ITEMS = [{"id": f"{w}{k}", "title": f"{w} story {k}", "description": f"a {w} tale, part {k}",
          "tags": [w]} for w in WORDS for k in range(6)]
# Tiny data: a few dozen users are enough when the ranker may learn from few rows.
SMALL = dict(retrain_every_events=100_000, ranker_min_groups=10, ranker_min_data_in_leaf=2,
             ranker_labels_per_user=3)


def walk(user: str, theme: str, start: int, t: float, n: int = 5) -> list[dict[str, Any]]:
    return [{"type": "view", "event_id": f"{user}-{k}", "user_id": user, "occurred_at": t + k,
             "item_id": f"{theme}{(start + k) % 6}"} for k in range(n)]


async def open_system(url: str, **settings: Any) -> tuple[InProcessSystem, httpx.AsyncClient]:
    system = auth.system(Settings(shards=2, **settings), url,
                         ThreadedEncoder(HashingEncoder(dim=32)))
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=system.app),
                               base_url="http://portrait", headers=await auth.headers(system))
    assert (await client.post("/v1/items", json={"items": ITEMS})).status_code == 200
    return system, client


@pytest_asyncio.fixture(loop_scope="session")
async def trained() -> AsyncIterator[tuple[InProcessSystem, httpx.AsyncClient, dict[str, Any]]]:
    url = "memory://learned-ranker-api"
    system, http = await open_system(url, **SMALL)
    events: list[dict[str, Any]] = []
    for u in range(48):
        events += walk(f"u{u}", WORDS[u % 4], u // 4, T0 + 100 * u)
    for u in range(0, 48, 6):  # some users searched too: their words reach the ranker
        events.append({"type": "search", "event_id": f"u{u}-s", "user_id": f"u{u}",
                       "occurred_at": T0 + 100 * u + 2.5, "query": f"more {WORDS[u % 4]}"})
    assert (await http.post("/v1/events", json={"events": events})).status_code == 200
    stats = (await http.post("/v1/item-space/retrain")).json()
    yield system, http, stats
    await http.aclose()
    await system.close()
    forget_memory(url)


async def recommend(http: httpx.AsyncClient, user: str, **params: Any) -> dict[str, Any]:
    resp = await http.get(f"/v1/users/{user}/recommendations", params={"k": 5, **params})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    check_schema(body, m.RecommendationsResponse)
    return body


async def test_a_retrain_trains_the_ranker_and_says_so(trained: Any) -> None:
    _, http, stats = trained
    assert stats["version"] == 1 and stats["ranker_trained"], stats
    assert stats["ranker_skipped_reason"] is None
    assert stats["ranker_metrics"]["groups"] >= 10
    info = (await http.get("/v1/item-space")).json()
    assert info["ranker_trained"] and info["ranker_metrics"] == stats["ranker_metrics"]


async def test_a_user_with_history_is_ranked_by_the_learned_ranker_with_reasons(
    trained: Any,
) -> None:
    system, http, _ = trained
    await http.post("/v1/events", json={"events": walk("fan", "horse", 0, T0 + 9000, 3)})
    body = await recommend(http, "fan")
    assert body["ranker"] == "learned:1"
    assert len(body["items"]) == 5
    seen = {"horse0", "horse1", "horse2"}
    assert not seen & {i["item_id"] for i in body["items"]}  # what they had is excluded
    kinds = {r["kind"] for i in body["items"] for r in i["reasons"]}
    assert kinds and kinds <= {"similar_to", "interest", "keyword", "popular"}
    similar = [r["value"] for i in body["items"] for r in i["reasons"]
               if r["kind"] == "similar_to"]
    assert set(similar) <= seen  # a "similar to" names one of the user's own recent items
    await system.context.experiments.recorder.flush()
    stored = await system.context.stores.impressions.get(body["request_id"])
    assert stored is not None and stored.ranker == "learned:1"


async def test_a_user_without_history_gets_the_blend(trained: Any) -> None:
    system, http, _ = trained
    body = await recommend(http, "stranger")
    assert body["ranker"] == "blend" and body["items"]
    await system.context.experiments.recorder.flush()
    stored = await system.context.stores.impressions.get(body["request_id"])
    assert stored is not None and stored.ranker == "blend"


async def test_the_inspector_accepts_keyword_reasons(trained: Any) -> None:
    # A searcher's list may carry "keyword" reasons: every consumer renders them.
    system, http, _ = trained
    body = await recommend(http, "u0", k=10)
    assert body["ranker"] == "learned:1"
    token = http.headers["authorization"].removeprefix("Bearer ")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=system.app),
                                 base_url="http://portrait") as browser:
        assert (await browser.post("/inspector/login", data={"token": token})).status_code == 303
        page = await browser.get("/inspector/recommendations", params={"user": "u0"})
    assert page.status_code == 200 and "ranked by learned:1" in page.text
    for kind, word in (("keyword", "your word"), ("similar_to", "like")):
        if any(r["kind"] == kind for i in body["items"] for r in i["reasons"]):
            assert word in page.text


async def test_too_little_data_publishes_the_space_without_a_ranker_and_says_why() -> None:
    url = "memory://learned-ranker-too-little"
    system, http = await open_system(url, retrain_every_events=100_000)  # min 30 users
    try:
        events: list[dict[str, Any]] = []
        for u in range(8):
            events += walk(f"u{u}", WORDS[u % 4], u, T0 + 100 * u)
        assert (await http.post("/v1/events", json={"events": events})).status_code == 200
        stats = (await http.post("/v1/item-space/retrain")).json()
        assert stats["version"] == 1 and not stats["ranker_trained"]
        assert "at least 30" in stats["ranker_skipped_reason"], stats
        body = await recommend(http, "u1")
        assert body["ranker"] == "blend" and body["items"]
    finally:
        await http.aclose()
        await system.close()
        forget_memory(url)


async def test_the_view_with_its_ranker_survives_pickling(trained: Any) -> None:
    # Ray ships the view by pickle (the registry's parts): the Booster travels as its text.
    system, _, _ = trained
    view = system.shards[0]._view()  # the view the shard ranks with
    assert view.ranker is not None
    again = pickle.loads(pickle.dumps(view))
    parts = pickle.loads(pickle.dumps(view.to_parts()))
    rebuilt = CatalogView.from_parts(view.key, *parts)
    x = np.random.default_rng(0).random((7, len(view.ranker.settings.feature_names)),
                                       dtype=np.float64).astype(np.float32)
    for other in (again, rebuilt):
        assert other.ranker is not None and other.ranker_name == "learned:1"
        assert np.allclose(other.ranker.predict(x), view.ranker.predict(x))
        assert np.array_equal(other.ranker.cooc.nbr, view.ranker.cooc.nbr)


@pytest.mark.parametrize("spoil", ["features_version", "garbage"])
async def test_a_stored_ranker_this_code_cannot_use_is_never_loaded(
    spoil: str, caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"memory://learned-ranker-spoiled-{spoil}"
    system, http = await open_system(url, **SMALL)
    try:
        events: list[dict[str, Any]] = []
        for u in range(48):
            events += walk(f"u{u}", WORDS[u % 4], u // 4, T0 + 100 * u)
        assert (await http.post("/v1/events", json={"events": events})).status_code == 200
        assert (await http.post("/v1/item-space/retrain")).json()["ranker_trained"]
        assert (await recommend(http, "u1"))["ranker"] == "learned:1"
        spaces = system.context.stores.item_spaces
        good = await spaces.latest()
        assert good is not None and good.ranker is not None
        if spoil == "garbage":
            bad = b"\xc1 not a ranker"
        else:  # a ranker from code whose features meant something else
            doc = msgpack.unpackb(good.ranker, raw=False)
            bad = msgpack.packb({**doc, "features_version": FEATURES_VERSION + 1},
                                use_bin_type=True)
        saved = await spaces.save(dataclasses.replace(good, ranker=bad))
        with caplog.at_level(logging.WARNING, logger="actors.catalog_view_builder"):
            await system.publication.publish()
            await system.publication.publish(force=True)  # rebuilt: still refused, told once
        warnings = [r for r in caplog.records if "learned ranker is not loaded" in r.message]
        assert len(warnings) == 1 and f"item space {saved.version}" in warnings[0].message
        body = await recommend(http, "u1")
        assert body["ranker"] == "blend" and body["items"]
        assert system.shards[0]._view().space_version == saved.version
    finally:
        await http.aclose()
        await system.close()
        forget_memory(url)
