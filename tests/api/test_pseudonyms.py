"""With PORTRAIT_PSEUDONYMIZE=on the log, snapshots and shards hold a keyed hash of each user
id; the API still speaks the caller's ids."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from portrait.pseudonyms import pseudonymizer
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
USER = "alice@example.com"


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://pseudonyms"
        forget_memory("memory://pseudonyms")
        return
    request.getfixturevalue("embedded_engine")  # its tables emptied
    yield request.getfixturevalue("embedded_pg_url")


async def test_the_log_never_holds_the_raw_id(store_url: str) -> None:
    url = store_url
    system = auth.system(Settings(shards=2, pseudonymize=True), url,
                         ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await auth.headers(system)) as http:
            items = [{"id": f"m{k}", "title": f"Film {k}", "description": "a film",
                      "tags": ["Drama"]} for k in range(3)]
            assert (await http.post("/v1/items", json={"items": items})).status_code == 200
            events = [{"type": "view", "event_id": f"e{k}", "user_id": USER,
                       "occurred_at": 1.7e9 + k, "item_id": f"m{k}"} for k in range(3)]
            ingest = (await http.post("/v1/events", json={"events": events})).json()
            assert {r["user_id"] for r in ingest["results"]} == {USER}
            answers = [await http.get(f"/v1/users/{USER}/{path}") for path in (
                "recommendations", "profile", "events", "profile/changes?from_seq=1")]
            recs, profile, audit, changes = (a.json() for a in answers)
            assert recs["user_id"] == profile["user_id"] == audit["user_id"] == USER
            assert profile["event_count"] == 3 and changes["events_between"] == 2
            assert {e["event"]["user_id"] for e in audit["events"]} == {USER}
            hidden = pseudonymizer(auth.TEST_KEY)(USER)
            assert not any(hidden in a.text for a in answers)  # the caller's ids only
        stored = await system.context.stores.events.read_all()
        assert stored and all(USER not in r.event.user_id for r in stored)
        assert {r.event.user_id for r in stored} == {pseudonymizer(auth.TEST_KEY)(USER)}
        assert (await system.context.stores.events.read(USER)) == []  # nothing under the id
    finally:
        await system.close()
