"""The service gives each text its role's prefix when the encoder's model wants one (e5):
catalog items as passages; searches, reviews, their keyword candidates and the interest-tag
prompts as queries. In process, with a deterministic encoder; seconds."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from portrait.prompts import TextPrompts
from portrait.tuned_config import TunedConfig
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")


class PromptedEncoder(HashingEncoder):
    prompts = TextPrompts(query="query: ", passage="passage: ")


async def test_items_are_passages_and_user_text_is_queries(tmp_path: Path) -> None:
    config = tmp_path / "plain.json"
    config.write_text(json.dumps(TunedConfig().to_document()))
    enc = PromptedEncoder(dim=32)
    url = "memory://encoder-prompts"
    system = auth.system(Settings(shards=1, profile_config=config), url, ThreadedEncoder(enc))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=system.app),
                                     base_url="http://portrait",
                                     headers=await auth.headers(system)) as http:
            resp = await http.post("/v1/items", json={"items": [
                {"id": "m1", "title": "Star Rebels", "description": "rebels in space",
                 "tags": ["Sci-Fi"]},
                {"id": "m2", "title": "Paris Kiss", "description": "", "tags": ["Romance"]},
            ]})
            assert resp.status_code == 200, resp.text
            resp = await http.post("/v1/events", json={"events": [
                {"type": "search", "event_id": "e1", "user_id": "u", "occurred_at": 1.0,
                 "query": "space adventure"},
                {"type": "review", "event_id": "e2", "user_id": "u", "occurred_at": 2.0,
                 "item_id": "m2", "text": "sweet romance", "rating": 4},
            ]})
            assert resp.status_code == 200, resp.text
            profile = (await http.get("/v1/users/u/profile")).json()
            assert profile["counts"] == {"review": 1, "search": 1}
    finally:
        await system.close()
        forget_memory(url)
    sent = [t for call in enc.calls for t in call]
    assert "passage: Star Rebels. Tags: Sci-Fi. rebels in space" in sent
    assert "passage: Paris Kiss. Tags: Romance" in sent
    assert "query: space adventure" in sent and "query: sweet romance" in sent
    assert "query: Sci-Fi items" in sent and "query: Romance items" in sent  # tag prompts
    # nothing went out bare, nor with two prefixes
    assert all(t.startswith(("query: ", "passage: ")) for t in sent), sent
    assert not [t for t in sent if t.split(": ", 2)[1] in ("query", "passage")], sent
