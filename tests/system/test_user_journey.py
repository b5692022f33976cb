"""A user's whole life through the HTTP API, written once and run on every system
(``conftest.system``: the in-process composition and the Ray one): ingest, recommend,
audit (the log, the profile as of a past seq, what changed), erase; and bad input refused
whole, naming the field.

Each test uses user ids of its own: the system is shared by the module's tests."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from portrait.erasure import user_hash
from serve.settings import Settings
from tests.http_calls import ev

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000.0


def ids(recommended: dict[str, Any]) -> list[str]:
    return [i["item_id"] for i in recommended["items"]]


async def recommend(http: httpx.AsyncClient, user: str, k: int = 5) -> dict[str, Any]:
    resp = await http.get(f"/v1/users/{user}/recommendations", params={"k": k})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_ingest_recommend_audit_erase(http: httpx.AsyncClient) -> None:
    cold = await recommend(http, "jo")
    assert cold["as_of_seq"] == 0 and len(cold["items"]) == 5

    # -- ingest: appended, folded before the answer, idempotent under a client's retry.
    batch = [
        ev("purchase", "j1", "jo", T0, item_id="s1"),
        ev("view", "j2", "jo", T0 + 60, item_id="s2"),
        ev("rating", "j3", "jo", T0 + 120, item_id="s3", rating=5.0),
        ev("review", "j4", "jo", T0 + 180, item_id="s4", text="Spaceships! Aliens!", rating=5),
        ev("search", "j5", "jo", T0 + 240, query="aliens in space"),
    ]
    resp = await http.post("/v1/events", json={"events": batch})
    assert resp.status_code == 200, resp.text
    results = resp.json()["results"]
    assert [(r["seq"], r["duplicate"]) for r in results] == [(s, False) for s in range(1, 6)]
    retried = (await http.post("/v1/events", json={"events": batch})).json()["results"]
    assert [(r["seq"], r["duplicate"]) for r in retried] == [(s, True) for s in range(1, 6)]

    # -- recommend: read-your-writes, purchased/rated/reviewed items left out, the taste
    # shows (the rest of the sci-fi leads), each item says why.
    warm = await recommend(http, "jo", k=3)
    assert warm["as_of_seq"] == 5
    assert not {"s1", "s3", "s4"} & set(ids(warm))
    assert set(ids(warm)) <= {"s2", "s5", "s6"}, ids(warm)
    assert all(i["title"] and i["reasons"] for i in warm["items"])

    # -- audit: the log in seq order, a page at a time; the profile now and as of a past
    # seq (a replay of the log); what changed in between.
    page = (await http.get("/v1/users/jo/events", params={"limit": 3})).json()
    assert [e["seq"] for e in page["events"]] == [1, 2, 3] and page["next_after"] == 3
    rest = (await http.get("/v1/users/jo/events", params={"after": 3})).json()
    assert [e["seq"] for e in rest["events"]] == [4, 5] and rest["next_after"] is None
    logged = [e["event"] for e in page["events"] + rest["events"]]
    assert [(e["event_id"], e["type"], e["user_id"]) for e in logged] == [
        (e["event_id"], e["type"], "jo") for e in batch]
    now = (await http.get("/v1/users/jo/profile")).json()
    assert (now["event_count"], now["last_seq"]) == (5, 5)
    assert now["counts"] == {"purchase": 1, "view": 1, "rating": 1, "review": 1, "search": 1}
    assert now["tags"][0]["tag"] == "Sci-Fi"
    replayed = (await http.get("/v1/users/jo/profile", params={"at_seq": 5})).json()
    assert replayed == now  # the live profile is exactly the fold of its log
    past = (await http.get("/v1/users/jo/profile", params={"at_seq": 2})).json()
    assert (past["event_count"], past["last_seq"]) == (2, 2)
    assert past["counts"] == {"purchase": 1, "view": 1}
    changes = (await http.get("/v1/users/jo/profile/changes", params={"from_seq": 2})).json()
    assert (changes["from_seq"], changes["to_seq"], changes["events_between"]) == (2, 5, 3)
    assert changes["count_changes"] == {"rating": 1, "review": 1, "search": 1}

    # -- erase: the record, then the user is gone (410 saying so), nobody else is touched,
    # and the id starts afresh.
    await http.post("/v1/events", json={"events": [ev("view", "k1", "kim", T0, item_id="r1")]})
    kim_before = (await http.get("/v1/users/kim/events")).json()
    erased = await http.delete("/v1/users/jo")
    assert erased.status_code == 200, erased.text
    record = erased.json()
    assert (record["user_id"], record["user_hash"], record["events"]) == ("jo", user_hash("jo"),
                                                                          5)
    for path in ("/v1/users/jo/profile", "/v1/users/jo/events"):
        gone = await http.get(path)
        assert gone.status_code == 410 and gone.json()["error"] == "UserErased", gone.text
    assert (await http.delete("/v1/users/jo")).status_code == 410
    assert (await recommend(http, "jo"))["as_of_seq"] == 0  # cold again
    assert (await http.get("/v1/users/kim/events")).json() == kim_before
    again = await http.post("/v1/events", json={"events": [batch[1]]})
    assert [(r["seq"], r["duplicate"]) for r in again.json()["results"]] == [(1, False)]
    assert (await http.get("/v1/users/jo/profile")).json()["event_count"] == 1


async def test_unknown_users(http: httpx.AsyncClient) -> None:
    for path in ("/v1/users/nobody/profile", "/v1/users/nobody/events"):
        resp = await http.get(path)
        assert resp.status_code == 404 and resp.json()["error"] == "UnknownUser", resp.text
    assert (await http.delete("/v1/users/nobody")).status_code == 404


@pytest.mark.parametrize(("method", "path", "body", "params", "field"), [
    # One bad event refuses the whole batch: nothing of it is written.
    ("POST", "/v1/events", {"events": [ev("view", "b1", "bo", T0, item_id="r1"),
                                       ev("rating", "b2", "bo", T0, item_id="r2", rating=99)]},
     None, "events[1].rating"),
    ("POST", "/v1/events", {"events": [ev("view", "b3", "bo", T0, item_id="r1"),
                                       ev("view", "b4", "", T0, item_id="r2")]},
     None, "events[1].user_id"),
    ("POST", "/v1/events", {"events": [ev("teleport", "b5", "bo", T0)]}, None, None),
    ("GET", "/v1/users/bo/recommendations", None, {"k": 0}, "k"),
    ("GET", "/v1/users/bo/profile/changes", None, {"from_seq": 5, "to_seq": 2}, "to_seq"),
    ("POST", "/v1/items", {"items": [{"id": "x1", "title": ""}]}, None, None),
])
async def test_bad_input_is_refused_naming_the_field(
    http: httpx.AsyncClient, method: str, path: str, body: Any, params: Any,
    field: str | None,
) -> None:
    resp = await http.request(method, path, json=body, params=params)
    assert resp.status_code == 422, resp.text
    error = resp.json()
    assert set(error) >= {"error", "message"}, error
    if field is not None:
        assert error.get("field") == field, error
    assert (await http.get("/v1/users/bo/events")).status_code == 404  # nothing was written
    assert (await http.get("/v1/items/x1")).status_code == 404


def _view(i: int) -> dict[str, Any]:
    return ev("view", f"m{i}", "mo", T0, item_id="r1")


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"events": [{**_view(0), "type": "rating", "rating": 9}]}, 422, "events[0].rating"),
    ({"events": [{**_view(0), "type": "teleport"}]}, 422, "events[0].type"),
    ({"events": [{k: v for k, v in _view(0).items() if k != "occurred_at"}]}, 422,
     "events[0].occurred_at"),
    ({"events": [{**_view(0), "rating": "five", "type": "rating"}]}, 422, "events[0].rating"),
    ({"events": "nope"}, 422, "events"),
    ({}, 422, "events"),
    ({"events": [_view(i) for i in range(Settings().api.max_batch_events + 1)]}, 413, "events"),
])
async def test_malformed_batches_get_documented_errors(
    http: httpx.AsyncClient, body: Any, status: int, field: str,
) -> None:
    resp = await http.post("/v1/events", json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["field"] == field
    assert (await http.get("/v1/users/mo/events")).status_code == 404  # nothing was written


async def test_a_request_without_a_token_is_refused(http: httpx.AsyncClient) -> None:
    anonymous = await http.get("/v1/users/jo/recommendations",
                               headers={"authorization": ""})
    assert anonymous.status_code == 401, anonymous.text
    assert (await http.get("/healthz", headers={"authorization": ""})).status_code == 200


async def test_items_written_later_are_served_at_once_and_a_changed_one_once(
        http: httpx.AsyncClient) -> None:
    """A catalog write reaches the shards as a delta on the view they hold: the new item is
    recommendable when the write returns, a changed item is shown once, as changed."""
    events = [ev("view", "c1", "cat", T0, item_id="r1"), ev("view", "c2", "cat", T0 + 60,
                                                            item_id="r2")]
    assert (await http.post("/v1/events", json={"events": events})).status_code == 200
    written = [
        {"id": "r7", "title": "Paris love 7", "description": "Two people fall in love.",
         "tags": ["Romance"]},
        {"id": "r3", "title": "Paris love 3 (restored)", "description": "Two people fall in love.",
         "tags": ["Romance"]},
    ]
    resp = await http.post("/v1/items", json={"items": written})
    assert resp.status_code == 200, resp.text
    recs = await recommend(http, "cat", k=6)
    shown = ids(recs)
    assert "r7" in shown and len(shown) == len(set(shown)), shown
    titles = {i["item_id"]: i["title"] for i in recs["items"]}
    assert titles.get("r3", "Paris love 3 (restored)") == "Paris love 3 (restored)"
    assert (await http.get("/v1/items/r3")).json()["title"] == "Paris love 3 (restored)"
