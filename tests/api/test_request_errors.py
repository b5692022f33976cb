"""Bodies FastAPI cannot parse are answered in the API's error shape, naming ``body``.

A malformed JSON body answered 422 with ``"field": "12"`` (FastAPI's byte offset where the
field goes), and a body that is not UTF-8 answered FastAPI's own
``{"detail": "There was an error parsing the body"}``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.live_server import serving

_names = itertools.count()


@pytest.fixture(scope="module")
def api() -> Iterator[tuple[str, dict[str, str]]]:
    url = f"memory://request-errors-{next(_names)}"
    system = auth.system(Settings(shards=1), url, ThreadedEncoder(HashingEncoder(dim=16)))
    with serving(system) as (base, headers):
        yield base, {**headers, "content-type": "application/json"}
    forget_memory(url)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/events", b'{"events": [ {"type": "view",, } ]}'),
    ("/v1/items", b'{"items": '),
    ("/v1/shards", b"count=3"),
])
def test_a_body_that_is_not_json_names_body(
    api: tuple[str, dict[str, str]], path: str, body: bytes
) -> None:
    base, headers = api
    resp = httpx.post(f"{base}{path}", content=body, headers=headers)
    assert resp.status_code == 422, resp.text
    answer = resp.json()
    assert answer["error"] == "InvalidField" and answer["field"] == "body", answer
    assert answer["message"].startswith("body: not valid JSON"), answer


def test_a_body_that_is_not_utf8_is_answered_in_our_shape(
    api: tuple[str, dict[str, str]],
) -> None:
    base, headers = api
    resp = httpx.post(f"{base}/v1/events", content=b'{"events": ["\xff\xfe"]}', headers=headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "body" and resp.json()["error"] == "InvalidField"


def test_a_nested_field_is_named_like_the_domain_names_it(
    api: tuple[str, dict[str, str]],
) -> None:
    base, headers = api
    resp = httpx.post(f"{base}/v1/impressions/r1/shown", headers=headers,
                      json={"user_id": "u", "item_ids": ["a", 3]})
    assert resp.status_code == 422 and resp.json()["field"] == "item_ids[1]", resp.text


def test_starlette_answers_take_our_shape(api: tuple[str, dict[str, str]]) -> None:
    base, headers = api
    missing = httpx.get(f"{base}/v1/nothing-here", headers=headers)
    assert missing.status_code == 404
    assert missing.json() == {"error": "NotFound", "message": "Not Found"}
    wrong = httpx.patch(f"{base}/v1/items/m1", headers=headers)
    assert wrong.status_code == 405 and wrong.json()["error"] == "MethodNotAllowed"
    assert "PUT" in wrong.headers["allow"]


@pytest.mark.parametrize("stars", ["five", [1], {"n": 1}, True])
def test_a_v1_review_whose_stars_are_no_number_is_a_422(
    api: tuple[str, dict[str, str]], stars: object,
) -> None:
    # The v1 upcaster called float() on them: "five" crashed the request with a 500.
    base, headers = api
    review = {"type": "review", "schema_version": 1, "event_id": "v1", "user_id": "rev",
              "occurred_at": 1_700_000_000, "item_id": "m1", "body": "fine", "stars": stars}
    resp = httpx.post(f"{base}/v1/events", headers=headers, json={"events": [review]})
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "events[0].stars"
    assert httpx.get(f"{base}/v1/users/rev/events", headers=headers).status_code == 404
