"""Per-user erasure by crypto-shredding, end to end through the API, on memory stores and on
the real (embedded) Postgres with encryption at rest on.

On Postgres the raw rows are read back afterwards: what remains of the user in the log is
ciphertext whose key no longer exists, and no key that does exist opens it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text

from actors.text_features import ThreadedEncoder
from portrait.erasure import user_hash
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.encryption import EVENT, SealedDataError, is_sealed, parse_master_keys
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000.0
SECRET_REVIEW = "my neighbour Tobias keeps asking about the haunted lighthouse"
ITEMS = [
    {"id": f"m{i}", "title": f"Film {i}", "description": f"film number {i}", "tags": ["Drama"]}
    for i in range(1, 6)
]


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://erasure"
        forget_memory("memory://erasure")
        return
    request.getfixturevalue("embedded_engine")
    yield request.getfixturevalue("embedded_pg_url")


@pytest_asyncio.fixture(loop_scope="session")
async def system(store_url: str) -> AsyncIterator[InProcessSystem]:
    sys_ = auth.system(Settings(shards=2, snapshot_every=2), store_url,
                       ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        yield sys_
    finally:
        await sys_.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(system: InProcessSystem) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
        assert (await client.post("/v1/items", json={"items": ITEMS})).status_code == 200
        yield client


def view(eid: str, user: str, t: float, item: str) -> dict[str, Any]:
    return {"type": "view", "event_id": eid, "user_id": user, "occurred_at": t, "item_id": item}


def review(eid: str, user: str, t: float, item: str, body: str) -> dict[str, Any]:
    return {"type": "review", "event_id": eid, "user_id": user, "occurred_at": t,
            "item_id": item, "text": body, "rating": 4}


async def send(http: httpx.AsyncClient, events: list[dict[str, Any]]) -> None:
    resp = await http.post("/v1/events", json={"events": events})
    assert resp.status_code == 200, resp.text


async def history(http: httpx.AsyncClient, user: str) -> tuple[int, Any, Any]:
    profile = await http.get(f"/v1/users/{user}/profile")
    events = await http.get(f"/v1/users/{user}/events")
    return profile.status_code, profile.json(), events.json()


async def test_erasure_end_to_end(system: InProcessSystem, http: httpx.AsyncClient,
                                  store_url: str) -> None:
    await send(http, [view(f"e{i}", "eve", T0 + i, f"m{1 + i % 3}") for i in range(6)]
               + [review("r1", "eve", T0 + 10, "m4", SECRET_REVIEW)]
               + [view(f"o{i}", "otto", T0 + i, f"m{1 + i % 2}") for i in range(5)])
    otto_before = await history(http, "otto")
    popularity_before = await system.context.stores.catalog_store.interaction_counts()

    resp = await http.delete("/v1/users/eve")
    assert resp.status_code == 200, resp.text
    record = resp.json()
    assert record["user_id"] == "eve" and record["user_hash"] == user_hash("eve")
    assert record["events"] == 7 and record["requested_by"].startswith("test-")

    for path in ("/v1/users/eve/profile", "/v1/users/eve/events"):
        gone = await http.get(path)
        assert gone.status_code == 410, (path, gone.text)
        assert gone.json() == {"error": "UserErased", "field": "user_id",
                               "message": gone.json()["message"]}
    again = await http.delete("/v1/users/eve")
    assert again.status_code == 410  # nothing to erase, and it says why
    assert (await http.delete("/v1/users/nobody")).status_code == 404

    # Nobody else changed; popularity no longer counts eve's views.
    assert await history(http, "otto") == otto_before
    counts, _ = await system.context.stores.catalog_store.interaction_counts()
    assert popularity_before[0]["m4"] == 1 and counts == {"m1": 3, "m2": 2}  # otto's only
    # The erasure record is kept for audit.
    kept = await system.context.stores.eraser.last_erasure("eve")
    assert kept is not None and kept.erasure_id == record["erasure_id"]

    # An event for the erased id starts a fresh profile.
    await send(http, [view("e0", "eve", T0 + 100, "m5")])  # an id eve used before: new now
    status, profile, events = await history(http, "eve")
    assert status == 200 and profile["event_count"] == 1
    assert [e["event"]["event_id"] for e in events["events"]] == ["e0"]

    if store_url.startswith("postgres"):
        await _check_rows_at_rest(system, store_url)


async def _check_rows_at_rest(system: InProcessSystem, url: str) -> None:
    """What a database superuser sees after the erasure."""
    from storage.database import create_engine

    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT user_id, payload, item_id FROM events "
                "WHERE user_id NOT IN ('otto', 'eve')"))).all()
            keys = (await conn.execute(text(
                "SELECT user_id, key_id, wrapped, master_key_id FROM user_keys"))).all()
            snaps = (await conn.execute(text(
                "SELECT count(*) FROM snapshots WHERE user_id = 'eve'"))).scalar_one()
            feats = (await conn.execute(text("SELECT user_id FROM text_features"))).scalars()
            everything = b"".join(r.payload for r in (await conn.execute(text(
                "SELECT payload FROM events"))).all())
            erasures = (await conn.execute(text("SELECT * FROM erasures"))).all()
    finally:
        await engine.dispose()
    assert len(rows) == 7  # still in the append-only log, detached from the id ...
    assert all(r.user_id.startswith("\x1ferased:") and r.item_id is None for r in rows)
    assert all(is_sealed(r.payload) for r in rows)  # ... sealed ...
    assert SECRET_REVIEW.encode() not in everything and b"Tobias" not in everything
    # ... and no key there is opens them: eve's is gone; the others are other users'.
    master = parse_master_keys(os.environ["PORTRAIT_MASTER_KEY"], "test")
    assert {k.user_id for k in keys} == {"otto", "eve"}  # eve's new key, after the new event
    for row in rows:
        for k in keys:
            data_key = master.unwrap(k.user_id, k.key_id, k.wrapped, k.master_key_id)
            with pytest.raises(SealedDataError):
                data_key.open(EVENT, row.payload)
    # The fresh eve has snapshots again only if she has written enough (she has 1 event).
    assert snaps == 0
    assert "eve" not in set(feats)  # her review's cached features went with her
    assert len(erasures) == 1 and bytes(erasures[0].user_hash).hex() == user_hash("eve")


async def test_erasure_under_concurrent_ingest_leaves_nothing(
    system: InProcessSystem, http: httpx.AsyncClient, store_url: str
) -> None:
    """The user is active on a shard and being written to while erased: every write that
    was acknowledged before the erasure is erased with her, every later one starts the fresh
    profile, and other users' acknowledged events are all there."""
    await send(http, [view(f"w{i}", "wil", T0 + i, "m1") for i in range(5)])
    acked: dict[str, list[str]] = {"wil": [], "ola": []}
    stop = asyncio.Event()

    async def writer(user: str) -> None:
        i = 0
        while not stop.is_set() and i < 400:
            eid = f"{user}-c{i}"
            resp = await http.post("/v1/events", json={"events": [
                view(eid, user, T0 + 100 + i, f"m{1 + i % 5}")]})
            assert resp.status_code == 200, resp.text
            acked[user].append(eid)
            i += 1
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(writer(u)) for u in ("wil", "ola")]
    await asyncio.sleep(0.2)
    erased = await http.delete("/v1/users/wil")
    after_erasure = len(acked["wil"])
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    assert erased.status_code == 200, erased.text

    # Other users: every acknowledged event is in the log.
    ola = await http.get("/v1/users/ola/events", params={"limit": 1000})
    assert [e["event"]["event_id"] for e in ola.json()["events"]] == acked["ola"]
    # Wil: only what was acknowledged after the erasure, as a fresh stream from seq 1.
    wil = (await http.get("/v1/users/wil/events", params={"limit": 1000})).json()["events"]
    ids = [e["event"]["event_id"] for e in wil]
    assert ids == acked["wil"][len(acked["wil"]) - len(ids):]
    assert len(ids) <= len(acked["wil"]) - after_erasure + 1  # one may have raced the delete
    assert [e["seq"] for e in wil] == list(range(1, len(wil) + 1))
    assert erased.json()["events"] + len(ids) == 5 + len(acked["wil"])
    # In memory: the shard's copy is the fresh one, built from those events only.
    profile = (await http.get("/v1/users/wil/profile")).json()
    assert profile["event_count"] == len(ids)
