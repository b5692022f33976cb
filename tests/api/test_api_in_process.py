"""The real HTTP API (routes, fan-out, error table, response builders) over in-process shards:
no Ray, no vLLM, seconds. The same scenarios run on the memory and the Postgres stores.

The end-to-end tier (tests/serve/test_api_e2e.py) runs the Ray system with the real encoder;
this tier is where API behaviour is pinned down cheaply.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import BaseModel

from actors.text_features import ThreadedEncoder
from portrait.tuned_config import TunedConfig
from serve.api import models as m
from serve.api.routes import create_app
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.http_calls import ev

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
_names = itertools.count()

ITEMS = [
    {
        "id": "m1",
        "title": "Star Rebels",
        "description": "space rebels fight an empire with starships",
        "tags": ["Sci-Fi", "Action"],
    },
    {
        "id": "m2",
        "title": "Galaxy Run",
        "description": "a starship crew escapes across the galaxy",
        "tags": ["Sci-Fi"],
    },
    {
        "id": "m3",
        "title": "Moon Base",
        "description": "astronauts alone on the moon",
        "tags": ["Sci-Fi", "Drama"],
    },
    {
        "id": "m4",
        "title": "Cooking Love",
        "description": "two chefs fall in love in a small kitchen",
        "tags": ["Romance", "Comedy"],
    },
    {
        "id": "m5",
        "title": "Paris Kiss",
        "description": "a romance in paris with a lot of kissing",
        "tags": ["Romance"],
    },
    {
        "id": "m6",
        "title": "Toy Friends",
        "description": "toys come alive and learn friendship",
        "tags": ["Animation", "Comedy"],
    },
]


@pytest.fixture(params=["memory", "postgres"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh memory store, or the embedded Postgres with its tables emptied."""
    if request.param == "memory":
        url = f"memory://api-test-{next(_names)}"
        yield url
        forget_memory(url)
        return
    request.getfixturevalue("embedded_engine")  # requested here only: memory runs need no server
    yield request.getfixturevalue("embedded_pg_url")


@pytest.fixture(scope="session")
def plain_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untuned profile and ranking defaults, text vectors only: the scenarios below reason
    about content similarity, not about the shipped tuned blend."""
    path = tmp_path_factory.mktemp("config") / "plain.json"
    path.write_text(json.dumps(TunedConfig().to_document()))
    return path


@pytest_asyncio.fixture(loop_scope="session")
async def system(store_url: str, plain_config: Path) -> AsyncIterator[InProcessSystem]:
    settings = Settings(
        shards=2, snapshot_every=3, max_batch_events=50, profile_config=plain_config
    )
    sys = auth.system(settings, store_url, ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        yield sys
    finally:
        await sys.close()


@pytest_asyncio.fixture(loop_scope="session")
async def http(system: InProcessSystem) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as client:
        resp = await client.post("/v1/items", json={"items": ITEMS})
        assert resp.status_code == 200, resp.text
        check_schema(resp.json(), m.UpsertResponse)
        yield client


def check_schema(body: dict[str, Any], model: type[BaseModel]) -> None:
    """The JSON a builder produced matches the documented model exactly (no extra keys)."""
    parsed = model.model_validate(body)
    assert parsed.model_dump(mode="json", exclude_unset=True) == body


async def test_ingest_changes_the_next_recommendation(http: httpx.AsyncClient) -> None:
    cold = (await http.get("/v1/users/alice/recommendations", params={"k": 6})).json()
    assert cold["as_of_seq"] == 0 and len(cold["items"]) == 6
    resp = await http.post(
        "/v1/events",
        json={
            "events": [
                ev("purchase", "a1", "alice", T0, item_id="m1"),
                ev("click", "a2", "alice", T0 + 1, item_id="m2"),
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    check_schema(resp.json(), m.IngestResponse)
    assert [r["seq"] for r in resp.json()["results"]] == [1, 2]
    warm = (await http.get("/v1/users/alice/recommendations", params={"k": 3})).json()
    check_schema(warm, m.RecommendationsResponse)
    assert warm["as_of_seq"] == 2 and warm["variant"] == "default"
    ids = [i["item_id"] for i in warm["items"]]
    assert "m1" not in ids  # purchased: excluded
    assert ids[0] in {"m2", "m3"}, ids  # the other sci-fi films lead
    assert warm["items"][0]["title"] and warm["items"][0]["reasons"]
    only = (
        await http.get("/v1/users/alice/recommendations", params={"k": 3, "tags": "Romance"})
    ).json()
    assert {i["item_id"] for i in only["items"]} <= {"m4", "m5"}


async def test_profile_audit_and_changes_match_their_models(http: httpx.AsyncClient) -> None:
    events = [
        ev(
            "rating",
            f"t{i}",
            "tina",
            T0 + 3600 * i,
            item_id=f"m{1 + i % 6}",
            rating=float(1 + i % 5),
        )
        for i in range(8)
    ]
    assert (await http.post("/v1/events", json={"events": events})).status_code == 200
    profile = (await http.get("/v1/users/tina/profile")).json()
    check_schema(profile, m.ProfileResponse)
    assert profile["event_count"] == 8 and profile["counts"] == {"rating": 8}
    past = (await http.get("/v1/users/tina/profile", params={"at_seq": 4})).json()
    assert past["event_count"] == 4 and past["last_seq"] == 4
    page = (await http.get("/v1/users/tina/events", params={"limit": 5})).json()
    check_schema(page, m.AuditPage)
    assert [e["seq"] for e in page["events"]] == [1, 2, 3, 4, 5] and page["next_after"] == 5
    rest = (await http.get("/v1/users/tina/events", params={"after": 5})).json()
    assert [e["seq"] for e in rest["events"]] == [6, 7, 8] and rest["next_after"] is None
    changes = (await http.get("/v1/users/tina/profile/changes", params={"from_seq": 4})).json()
    check_schema(changes, m.ChangesResponse)
    assert changes["events_between"] == 4
    item = (await http.get("/v1/items/m4")).json()
    check_schema(item, m.ItemResponse)
    assert item["tags"] == ["Romance", "Comedy"]


async def test_duplicates_conflicts_and_partial_failure(http: httpx.AsyncClient) -> None:
    batch = [ev("view", f"d{i}", "dora", T0 + i, item_id="m2") for i in range(3)]
    first = (await http.post("/v1/events", json={"events": batch})).json()["results"]
    again = (
        await http.post(
            "/v1/events", json={"events": [*batch, ev("view", "d3", "dora", T0 + 9, item_id="m3")]}
        )
    ).json()["results"]
    assert [r["duplicate"] for r in again] == [True, True, True, False]
    assert [r["seq"] for r in again[:3]] == [r["seq"] for r in first]
    conflict = await http.post(
        "/v1/events", json={"events": [ev("view", "d0", "dora", T0, item_id="m5")]}
    )
    assert conflict.status_code == 409
    assert conflict.json()["results"][0]["error"] == "EventIdConflict"
    mixed = await http.post(
        "/v1/events",
        json={
            "events": [
                ev("view", "d1", "dora", T0, item_id="m6"),  # reused id, other content: refused
                ev("view", "e1", "emil", T0, item_id="m6"),  # another user: recorded
            ]
        },
    )
    assert mixed.status_code == 207, mixed.text
    dora, emil = mixed.json()["results"]
    assert dora["error"] == "EventIdConflict" and emil["seq"] == 1


async def test_text_events_go_through_the_encoder(http: httpx.AsyncClient) -> None:
    resp = await http.post(
        "/v1/events",
        json={
            "events": [
                ev("search", "s1", "sam", T0, query="romance in paris"),
                ev(
                    "review",
                    "s2",
                    "sam",
                    T0 + 5,
                    item_id="m6",
                    text="toys and friendship, lovely",
                    rating=5,
                ),
            ]
        },
    )
    assert resp.status_code == 200, resp.text
    profile = (await http.get("/v1/users/sam/profile")).json()
    assert profile["counts"] == {"review": 1, "search": 1} and profile["keywords"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"events": [ev("rating", "x", "u", 1, item_id="1", rating=9)]}, 422, "events[0].rating"),
        (
            {
                "events": [
                    ev("view", "x", "u", 1, item_id="1"),
                    {"type": "teleport", "event_id": "y", "user_id": "u", "occurred_at": 1},
                ]
            },
            422,
            "events[1].type",
        ),
        (
            {"events": [{"type": "view", "event_id": "x", "user_id": "u", "item_id": "1"}]},
            422,
            "events[0].occurred_at",
        ),
        ({"events": "nope"}, 422, "events"),
        ({}, 422, "events"),
        ({"events": [ev("view", f"x{i}", "u", 1, item_id="1") for i in range(51)]}, 413, "events"),
    ],
)
async def test_malformed_requests_name_the_field_and_write_nothing(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, field: str
) -> None:
    resp = await http.post("/v1/events", json=body)
    assert resp.status_code == status, resp.text
    check_schema(resp.json(), m.ErrorBody)
    assert resp.json()["field"] == field
    assert (await http.get("/v1/users/u/events")).status_code == 404


async def test_items_errors_and_unknowns(http: httpx.AsyncClient) -> None:
    bad = await http.post("/v1/items", json={"items": [{"id": "z1", "title": "ok"}, {"id": "z2"}]})
    assert bad.status_code == 422 and bad.json()["field"] == "items[1].title", bad.text
    assert (await http.get("/v1/items/z1")).status_code == 404  # nothing of the batch written
    assert (await http.get("/v1/users/nobody/profile")).json()["error"] == "UnknownUser"
    assert (await http.get("/v1/items/nope")).json() == {
        "error": "UnknownItem",
        "message": "no item 'nope'",
        "field": "item_id",
    }
    assert (await http.get("/v1/users/x/recommendations", params={"k": 0})).json()["field"] == "k"
    changes = await http.get("/v1/users/x/profile/changes", params={"from_seq": 5, "to_seq": 2})
    assert changes.status_code == 422 and changes.json()["field"] == "to_seq"


async def test_new_item_is_recommendable_at_once(http: httpx.AsyncClient) -> None:
    put = await http.put(
        "/v1/items/new-1",
        json={
            "title": "Rebel Starships",
            "description": "space rebels fight an empire with starships",
            "tags": ["Sci-Fi"],
        },
    )
    assert put.status_code == 200 and put.json()["encoded"] == 1
    await http.post(
        "/v1/events",
        json={
            "events": [
                ev("search", "n1", "nina", T0, query="space rebels fight an empire with starships")
            ]
        },
    )
    recs = (await http.get("/v1/users/nina/recommendations", params={"k": 3})).json()
    assert "new-1" in [i["item_id"] for i in recs["items"]]


async def test_operations(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = (await http.get("/readyz")).json()
    assert ready["status"] == "ready" and ready["shards"] == 2
    await http.post("/v1/events", json={"events": [ev("view", "o1", "olga", T0, item_id="m1")]})
    text = (await http.get("/metrics")).text
    for name in (
        "portrait_ingested_events_total",
        "portrait_user_activations_total",
        "portrait_active_users",
        "portrait_shard_up",
        "portrait_shard_calls_in_flight",
        "portrait_shard_pending_events",
        "portrait_shard_version_conflicts_total",
        "portrait_storage_retries_total",
        "portrait_storage_unavailable_total",
    ):
        assert name in text, name
    assert (await http.get("/openapi.json")).json()["paths"]["/v1/events"]


async def test_hostile_input_is_a_422_and_never_harms_another_request(
    http: httpx.AsyncClient,
) -> None:
    """Each of these was a 500 or worse on main (see the faults issue)."""
    import asyncio
    import time

    async def status(events: list[dict[str, Any]]) -> tuple[int, str | None]:
        resp = await http.post("/v1/events", json={"events": events})
        return resp.status_code, resp.json().get("field")

    now = time.time()
    # A clock years ahead would pin the user's decay anchor there for good.
    assert await status([ev("view", "h1", "hank", now + 3 * 86400, item_id="m1")]) == (
        422, "events[0].occurred_at")
    assert (await status([ev("view", "h2", "hank", now + 3600, item_id="m1")]))[0] == 200
    # Integers a float cannot hold, sent as raw JSON.
    for raw in ('18446744073709551616', '1' + '0' * 400):
        body = ('{"events": [{"type": "view", "event_id": "h3", "user_id": "hank", '
                f'"occurred_at": {raw}, "item_id": "m1"}}]}}')
        resp = await http.post("/v1/events", content=body,
                               headers={"content-type": "application/json"})
        assert resp.status_code == 422 and resp.json()["field"] == "events[0].occurred_at"
    # A NUL id used to fail every request sharing its Postgres transaction and to echo their
    # parameters; it is refused before anything is written, and the good request next to it
    # is recorded.
    bad, good = await asyncio.gather(
        status([ev("view", "n1", "nul\x00user", T0, item_id="m1")]),
        status([ev("view", "n2", "neighbour", T0, item_id="m1")]),
    )
    assert bad == (422, "events[0].user_id") and good[0] == 200
    lone = '{"events": [{"type": "search", "event_id": "s1", "user_id": "hank", ' \
           '"occurred_at": 1700000000, "query": "shoes \\ud800"}]}'
    resp = await http.post("/v1/events", content=lone, headers={"content-type": "application/json"})
    assert resp.status_code == 422 and resp.json()["field"] == "events[0].query"
    # Query integers beyond Postgres bigint, and ids in the path that no store can hold.
    for path, params, field in (
        ("/v1/users/hank/events", {"after": 2**63}, "after"),
        ("/v1/users/hank/profile", {"at_seq": 2**64}, "at_seq"),
        ("/v1/users/hank/profile/changes", {"from_seq": 0, "to_seq": 2**63}, "to_seq"),
        ("/v1/users/hank/profile", {"at_time": "inf"}, "at_time"),
        ("/v1/users/a%00b/events", {}, "user_id"),
        ("/v1/users/a%00b/recommendations", {}, "user_id"),
        ("/v1/items/x%01y", {}, "item_id"),
    ):
        resp = await http.get(path, params=params)
        assert resp.status_code == 422, (path, resp.status_code, resp.text)
        assert resp.json()["field"] == field, (path, resp.json())
    audit = (await http.get("/v1/users/hank/events")).json()
    assert [e["event"]["event_id"] for e in audit["events"]] == ["h2"]  # nothing half-written


async def test_route_dependencies_run_inline_not_in_a_thread_pool(system: InProcessSystem) -> None:
    """FastAPI runs a plain-function dependency in its thread pool: a thread hop on every
    request (it cost the recommendation route about 0.4 ms in process)."""
    import inspect

    from fastapi.routing import APIRoute

    def calls(dependant: Any) -> Iterator[Any]:
        for sub in dependant.dependencies:
            yield sub.call
            yield from calls(sub)

    checked = 0
    for route in system.app.routes:
        if isinstance(route, APIRoute):
            for call in calls(route.dependant):
                # A function, or an object with an async __call__ (fastapi.security's)
                inline = inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(
                    type(call).__call__)
                assert inline, (route.path, call)
                checked += 1
    assert checked >= 6  # the user and item id checks of every route that takes one


async def test_a_refused_batch_leaves_no_text_features_for_a_later_event(
    http: httpx.AsyncClient,
) -> None:
    """Features are encoded before the append; when the append is refused, a later event that
    reuses the refused id with another text must be folded with its own text."""
    first = await http.post("/v1/events", json={"events": [
        ev("view", "p-v1", "pia", T0, item_id="m1")]})
    assert first.status_code == 200
    refused = await http.post("/v1/events", json={"events": [
        ev("search", "p-s1", "pia", T0 + 1, query="starships empire rebels galaxy"),
        ev("view", "p-v1", "pia", T0, item_id="m2"),  # the same id, other content: 409
    ]})
    assert refused.status_code == 409, refused.text
    again = await http.post("/v1/events", json={"events": [
        ev("search", "p-s1", "pia", T0 + 2, query="kitchen chefs cooking love")]})
    assert again.status_code == 200, again.text
    keywords = {k["keyword"] for k in (await http.get("/v1/users/pia/profile")).json()["keywords"]}
    assert keywords & {"kitchen", "chefs", "cooking", "love"}, keywords
    assert not keywords & {"starships", "empire", "rebels", "galaxy"}, keywords


async def test_oversized_bodies_are_refused_before_they_are_read(store_url: str) -> None:
    settings = Settings(shards=1)
    sys_ = auth.system(settings, store_url, ThreadedEncoder(HashingEncoder(dim=32)))
    context = sys_.context
    app = create_app(dataclasses.replace(  # the context is frozen: a copy with the limit
        context, limits=context.limits.model_copy(update={"max_body_bytes": 4096})))
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await auth.headers(sys_)) as client:
            big = {"events": [ev("search", f"q{i}", "big", T0 + i, query="x" * 100)
                              for i in range(40)]}
            resp = await client.post("/v1/events", json=big)
            assert resp.status_code == 413 and resp.json()["field"] == "body", resp.text

            async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
                for _ in range(10):
                    yield b" " * 1000

            resp = await client.post("/v1/events", content=chunks(),
                                     headers={"content-type": "application/json"})
            assert resp.status_code == 413 and resp.json()["error"] == "PayloadTooLarge"
            small = await client.post("/v1/events", json={"events": [
                ev("view", "ok1", "small", T0, item_id="m1")]})
            assert small.status_code == 200, small.text  # under the cap: read as usual
            audit = await client.get("/v1/users/big/events")
            assert audit.status_code == 404  # nothing of the refused bodies was written
    finally:
        await sys_.close()


async def test_error_answers_are_counted_by_status_and_type(http: httpx.AsyncClient) -> None:
    def counted(status: str, error: str) -> float:
        for line in text.splitlines():
            if line.startswith("portrait_api_errors_total{") and f'status="{status}"' in line \
                    and f'error="{error}"' in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    text = (await http.get("/metrics")).text
    before = counted("422", "InvalidField"), counted("404", "UnknownUser")
    await http.post("/v1/events", json={"events": [ev("rating", "x", "u", 1, item_id="1",
                                                      rating=9)]})
    await http.get("/v1/users/nobody-at-all/profile")
    text = (await http.get("/metrics")).text
    assert (counted("422", "InvalidField"), counted("404", "UnknownUser")) == (
        before[0] + 1, before[1] + 1)
