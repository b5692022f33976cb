"""Writers keep going while Postgres connections are dropped, stalled, and the server is
restarted; afterwards nothing acknowledged is lost or doubled, profiles equal a fresh replay,
and the service recovers by itself.

The real routes and shards run in process (no Ray) over a private embedded Postgres reached
through a small TCP proxy on loopback that can drop every connection, stall traffic, and
follow the server across a restart (its socket may move). Clients retry 503s with the same
event ids, as the README says to. Every loop is bounded in count and time.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from actors.text_features import ThreadedEncoder
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.database import create_engine
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade
from storage.postgres import PostgresEventLog
from storage.user_keys import UserKeys
from tests import auth
from tests.conftest import in_thread
from tests.fakes import HashingEncoder
from tests.faults.proxy import FaultProxy, proxied_url, socket_path
from tests.replay_check import assert_same_json, drop_snapshots

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
WRITERS, BATCHES, BATCH = 6, 60, 8


@pytest_asyncio.fixture(loop_scope="session")
async def world() -> AsyncIterator[dict[str, Any]]:
    base = Path(tempfile.mkdtemp(prefix="portrait-faults-"))
    pg = EmbeddedPostgres(base / "data")
    direct = await asyncio.to_thread(pg.start)
    in_thread(lambda: upgrade(direct))
    proxy = FaultProxy(socket_path(direct))
    await proxy.start()
    via_proxy = proxied_url(direct, proxy.port)
    settings = Settings(shards=2, snapshot_every=4, max_batch_events=100)
    encoder = ThreadedEncoder(HashingEncoder(dim=32))
    system = auth.system(settings, via_proxy, encoder)
    try:
        yield {"pg": pg, "proxy": proxy, "system": system, "url": via_proxy,
               "settings": settings, "encoder": encoder}
    finally:
        await system.close()
        await proxy.close()
        await asyncio.to_thread(pg.stop)
        shutil.rmtree(base, ignore_errors=True)  # 64 MB of database files a run otherwise


def view(user: str, k: int) -> dict[str, Any]:
    return {"type": "view", "event_id": f"{user}-{k}", "user_id": user,
            "occurred_at": T0 + k, "item_id": f"m{k % 5}"}


async def test_writers_survive_drops_stalls_and_a_restart(world: dict[str, Any]) -> None:
    system: InProcessSystem = world["system"]
    proxy: FaultProxy = world["proxy"]
    pg: EmbeddedPostgres = world["pg"]
    statuses: Counter[int] = Counter()
    acked: set[str] = set()
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system),
                                 timeout=120) as http:
        items = [{"id": f"m{k}", "title": f"Film {k}", "description": "a film", "tags": []}
                 for k in range(5)]
        assert (await http.post("/v1/items", json={"items": items})).status_code == 200

        async def writer(user: str) -> None:
            for b in range(BATCHES):
                batch = [view(user, b * BATCH + j) for j in range(BATCH)]
                for _ in range(400):  # bounded retries: at most ~40 s per batch
                    resp = await http.post("/v1/events", json={"events": batch})
                    statuses[resp.status_code] += 1
                    if resp.status_code == 200:
                        acked.update(r["event_id"] for r in resp.json()["results"])
                        break
                    assert resp.status_code == 503, resp.text
                    await asyncio.sleep(0.1)
                else:
                    raise AssertionError(f"{user}: batch {b} never acknowledged")
                await asyncio.sleep(0.05)

        async def reader() -> None:  # audit reads keep the ingress's own pool warm
            while not writers.done():
                resp = await http.get("/v1/users/w0/events", params={"limit": 5})
                assert resp.status_code in (200, 404, 503), resp.text  # 404 before w0 writes
                await asyncio.sleep(0.1)

        writers = asyncio.gather(*(writer(f"w{u}") for u in range(WRITERS)))
        reading = asyncio.ensure_future(reader())
        await asyncio.sleep(0.5)
        proxy.drop_all()  # every pooled connection dies mid-statement
        await asyncio.sleep(0.7)
        proxy.stall()  # the network hangs for two seconds
        await asyncio.sleep(2.0)
        proxy.resume()
        await asyncio.sleep(0.5)
        assert not writers.done(), "the restart must land mid-stream"
        began = time.monotonic()
        await asyncio.to_thread(pg.stop)  # the server restarts (its socket may move)
        proxy.drop_all()
        await asyncio.sleep(0.5)
        proxy.socket_path = socket_path(await asyncio.to_thread(pg.start))
        restart_s = time.monotonic() - began
        await asyncio.wait_for(writers, timeout=300)
        await reading

        # Reads recover too (they used to keep their dead connections: 503 for good).
        for _ in range(30):
            audit = await http.get("/v1/users/w1/events", params={"limit": 1000})
            if audit.status_code == 200:
                break
            await asyncio.sleep(0.2)
        assert audit.status_code == 200, audit.text
        assert len(audit.json()["events"]) == BATCHES * BATCH

        # Recovered without restarting anything: a new write and reads succeed.
        fresh = await http.post("/v1/events", json={"events": [view("late", 1)]})
        assert fresh.status_code == 200, fresh.text
        assert (await http.get("/v1/users/late/recommendations")).status_code == 200
        live = {f"w{u}": (await http.get(f"/v1/users/w{u}/profile")).json()
                for u in range(WRITERS)}
        # The operator saw it: the shards' retries are in the metrics.
        scrape = (await http.get("/metrics")).text
        retried = sum(float(line.rsplit(" ", 1)[1]) for line in scrape.splitlines()
                      if line.startswith("portrait_storage_retries_total{"))
        assert retried > 0, "portrait_storage_retries_total stayed 0 through the faults"

    assert set(statuses) <= {200, 503}, statuses
    expected = {view(f"w{u}", k)["event_id"] for u in range(WRITERS)
                for k in range(BATCHES * BATCH)}
    assert acked == expected
    # Every acknowledged event is in the log exactly once, seqs contiguous per user.
    engine = create_engine(world["url"])
    log = PostgresEventLog(engine, keys=UserKeys.from_environment())
    try:
        for u in range(WRITERS):
            recorded = await log.read(f"w{u}")
            ids = [r.event.event_id for r in recorded]
            assert len(ids) == len(set(ids)) == BATCHES * BATCH, f"w{u}"
            assert [r.seq for r in recorded] == list(range(1, len(ids) + 1))
    finally:
        await engine.dispose()
    await drop_snapshots(world["url"])  # a fresh system replays from the log alone
    replayed_system = auth.system(world["settings"], world["url"], world["encoder"])
    try:
        transport = httpx.ASGITransport(app=replayed_system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await auth.headers(replayed_system)) as http:
            for user, profile in live.items():
                replayed = (await http.get(f"/v1/users/{user}/profile")).json()
                assert_same_json(replayed, profile, user)
    finally:
        await replayed_system.close()
    print(f"\nfaults: {sum(statuses.values())} requests, {statuses[503]} answered 503 and "
          f"retried, acknowledged {len(acked)}, lost 0, duplicated 0; restart took "
          f"{restart_s:.1f} s; storage retries in the metrics: {retried:.0f}")
