"""Online experiments through the real routes: impressions of every recommendation, the
displayed-items report, attribution of events (with and without request ids), the report,
interleaving, erasure of impressions, the recorder when the store is away, and the CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.text_features import ThreadedEncoder
from portrait.errors import StorageUnavailable
from portrait.impression import Impression
from portrait.tuned_config import TunedConfig
from serve import cli
from serve.api import models as m
from serve.composition import InProcessSystem
from serve.experiments import Experiments
from serve.impression_recorder import ImpressionRecorder
from serve.settings import Settings
from storage.stores import forget_memory, open_stores
from tests import auth
from tests.api.test_api_in_process import check_schema
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000.0
ITEMS = [{"id": f"m{i}", "title": f"Film {i}", "description": f"a film about topic {i % 4}",
          "tags": [f"t{i % 3}"]} for i in range(1, 21)]


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://experiments-api"
        forget_memory("memory://experiments-api")
        return
    request.getfixturevalue("embedded_engine")
    yield request.getfixturevalue("embedded_pg_url")


@pytest.fixture
def experiment_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    """Two variants folding profiles alike, ranking differently; ``mode`` from the param."""
    plain = TunedConfig()
    (tmp_path / "plain.json").write_text(json.dumps(plain.to_document()))
    doc = plain.to_document()
    doc["ranking"]["popularity_weight"] = 50.0
    (tmp_path / "popular.json").write_text(json.dumps(doc))
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps({
        "name": "ranker", "split": {"plain": 50, "popular": 50},
        "mode": getattr(request, "param", "ab"),
        "variants": {"plain": "plain.json", "popular": "popular.json"}}))
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def system(store_url: str, experiment_file: Path) -> AsyncIterator[InProcessSystem]:
    sys_ = auth.system(Settings(shards=2, experiment=experiment_file), store_url,
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


def click(eid: str, user: str, item: str, request_id: str | None = None,
          kind: str = "click", **extra: Any) -> dict[str, Any]:
    e = {"type": kind, "event_id": eid, "user_id": user, "occurred_at": T0, "item_id": item,
         **extra}
    if request_id is not None:
        e["request_id"] = request_id
    return e


async def recommend(http: httpx.AsyncClient, user: str, k: int = 5) -> dict[str, Any]:
    resp = await http.get(f"/v1/users/{user}/recommendations", params={"k": k})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    check_schema(body, m.RecommendationsResponse)
    return body


async def test_recommendations_are_recorded_and_attributed(
    http: httpx.AsyncClient, system: InProcessSystem
) -> None:
    await http.post("/v1/events", json={"events": [click("h1", "ann", "m1", kind="view")]})
    first = await recommend(http, "ann")
    second = await recommend(http, "ann")
    assert first["request_id"] != second["request_id"] and len(first["request_id"]) == 32
    bob = await recommend(http, "bob")
    picked = first["items"][2]["item_id"]
    # Nothing is written on the request path: the recorder flushes in the background.
    await system.context.experiments.recorder.flush()  # type: ignore[union-attr]
    stored = await system.context.stores.impressions.get(first["request_id"])
    assert stored is not None and stored.user_id == "ann" and stored.experiment == "ranker"
    assert list(stored.items) == [i["item_id"] for i in first["items"]]
    assert stored.variant == first["variant"] and stored.config_hash

    resp = await http.post("/v1/events", json={"events": [
        click("c1", "ann", picked, first["request_id"]),
        click("c2", "ann", picked, "no-such-request"),        # unknown: ignored, not an error
        click("c3", "ann", bob["items"][0]["item_id"], bob["request_id"]),  # bob's list
        click("c4", "ann", picked, first["request_id"], kind="purchase"),
    ]})
    assert resp.status_code == 200 and all("seq" in r for r in resp.json()["results"])
    report = (await http.get("/v1/experiments/ranker/report")).json()
    assert report["ignored_request_ids"] == {"unknown": 1, "foreign": 1, "not_displayed": 0}
    mine = report["variants"][first["variant"]]
    assert mine["impressions"] >= 2 and mine["interactions"] == 2
    assert mine["mrr"]["value"] > 0 and 0 < mine["coverage"]["value"] <= 1
    assert mine["conversion"]["value"] > 0  # the purchase
    assert set(report["variants"]) == {"plain", "popular"} and report["control"] == "plain"
    assert "popular" in report["differences"] and report["warnings"]  # far too few users

    metrics = (await http.get("/metrics")).text
    assert 'portrait_attributed_actions_total{action="purchase",variant="' in metrics
    assert 'portrait_attribution_ignored_total{reason="foreign"}' in metrics


async def test_shown_items_reports(http: httpx.AsyncClient) -> None:
    out = await recommend(http, "cat")
    rid, items = out["request_id"], [i["item_id"] for i in out["items"]]
    resp = await http.post(f"/v1/impressions/{rid}/shown",
                           json={"user_id": "cat", "item_ids": items[:2]})
    assert resp.status_code == 200 and resp.json() == {"request_id": rid, "shown": 2}
    assert (await http.post(f"/v1/impressions/{rid}/shown",
                            json={"user_id": "dog", "item_ids": items[:1]})).status_code == 404
    bad = await http.post(f"/v1/impressions/{rid}/shown",
                          json={"user_id": "cat", "item_ids": ["not-served"]})
    assert bad.status_code == 422 and bad.json()["field"] == "item_ids[0]"
    # an item served but not displayed earns no credit
    await http.post("/v1/events", json={"events": [click("s1", "cat", items[4], rid)]})
    report = (await http.get("/v1/experiments/ranker/report")).json()
    assert report["ignored_request_ids"]["not_displayed"] == 1


async def test_report_errors_and_scope(http: httpx.AsyncClient, system: InProcessSystem) -> None:
    resp = await http.get("/v1/experiments/nope/report")
    assert resp.status_code == 404 and resp.json()["error"] == "UnknownExperiment"
    reader = await auth.headers(system, ["recommendations:read"])
    resp = await http.get("/v1/experiments/ranker/report", headers=reader)
    assert resp.status_code == 403
    empty = await http.get("/v1/experiments/ranker/report")  # configured, nothing served yet
    assert empty.status_code == 200 and empty.json()["variants"]["plain"]["impressions"] == 0


@pytest.mark.parametrize("experiment_file", ["interleave"], indirect=True)
async def test_interleaving_serves_both_teams_and_credits_them(http: httpx.AsyncClient) -> None:
    teams: set[str] = set()
    for u in range(6):
        out = await recommend(http, f"il{u}", k=6)
        assert out["variant"] == "interleave"
        teams |= {i["team"] for i in out["items"]}
        item = next(i for i in out["items"] if i["team"] == "popular")
        await http.post("/v1/events", json={"events": [
            click(f"il{u}", f"il{u}", item["item_id"], out["request_id"])]})
    assert teams == {"plain", "popular"}
    report = (await http.get("/v1/experiments/ranker/report")).json()
    assert report["mode"] == "interleave"
    pref = report["interleaving"]["by_user"]
    assert (pref["wins"], pref["losses"], pref["ties"]) == (6, 0, 0)
    assert pref["p_value"] == pytest.approx(2 / 64)


async def test_erasure_deletes_the_users_impressions(
    http: httpx.AsyncClient, system: InProcessSystem, store_url: str
) -> None:
    await http.post("/v1/events", json={"events": [click("x1", "eve", "m1", kind="view")]})
    rid = (await recommend(http, "eve"))["request_id"]
    keep = (await recommend(http, "fay"))["request_id"]
    assert (await http.delete("/v1/users/eve")).status_code == 200
    impressions = system.context.stores.impressions
    assert await impressions.get(rid) is None  # queued or written, it is gone
    assert await impressions.get(keep) is not None
    if store_url.startswith("postgres"):
        engine: AsyncEngine = system.context.stores.impressions._engine  # type: ignore[attr-defined]
        async with engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT count(*) FROM impressions WHERE user_id = 'eve'"))).scalar_one()
        assert rows == 0


class FlakyStore:
    """An impression store that is down until ``up`` is set."""

    def __init__(self) -> None:
        self.up = False
        self.rows: list[Impression] = []

    async def record_many(self, impressions: Sequence[Impression]) -> None:
        if not self.up:
            raise StorageUnavailable("down")
        self.rows.extend(impressions)


async def test_recorder_never_blocks_keeps_what_fits_and_counts_drops() -> None:
    store = FlakyStore()
    rec = ImpressionRecorder(store, flush_s=0.01, batch_rows=3, capacity=5)  # type: ignore[arg-type]
    for i in range(8):
        rec.record(Impression(f"r{i}", "u", "x", "a", "h", -1, ("m1",), float(i)))
    assert rec.pending == 5 and rec.dropped == 3  # bounded: the overflow is counted
    await asyncio.sleep(0.05)  # flushes fail: rows stay queued
    assert rec.failures >= 1 and rec.pending == 5 and store.rows == []
    store.up = True
    await asyncio.sleep(0.1)
    assert [r.request_id for r in store.rows] == [f"r{i}" for i in range(5)]
    assert rec.pending == 0
    await rec.close()


async def test_cli_report(embedded_pg_url: str, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PORTRAIT_DATABASE_URL", embedded_pg_url)
    # the command runs its own event loop: in a thread, beside the test's
    assert await asyncio.to_thread(cli.main, ["experiment", "report", "never-ran"]) == 2
    assert "no experiment 'never-ran'" in capsys.readouterr().err


async def test_shown_after_the_flush_keeps_every_field_of_the_impression() -> None:
    """Reporting displayed items of a written impression replaces the remembered copy with
    the same impression plus ``shown``: the ranker that served it included."""
    stores = open_stores("memory://experiments-shown")
    try:
        experiments = Experiments(stores, None)
        served = Impression("r1", "u", "", "default", "h", 3, ("m1", "m2"), T0,
                            ranker="learned:3")
        experiments.recorder.record(served)
        await experiments.recorder.flush()  # written: set_shown goes to the store
        assert experiments.recorder.buffered("r1") is None
        assert await experiments.set_shown("r1", "u", ["m2"]) == 1
        want = dataclasses.replace(served, shown=("m2",))
        assert experiments.recorder.recent("r1") == want
        assert await stores.impressions.get("r1") == want
        await experiments.recorder.close()
    finally:
        forget_memory("memory://experiments-shown")
