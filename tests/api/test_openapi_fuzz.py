"""Schemathesis over the OpenAPI document: generated requests to every route of the real app
(in-process shards, memory store) served by uvicorn on loopback. No answer may be a 5xx other
than a 503, and every error answer has the documented body.

Fixed seed (derandomized Hypothesis), so CI runs the same cases every time; the per-route
budget gives well over 1,000 cases in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from actors.text_features import ThreadedEncoder
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.live_server import serving

CASES_PER_OPERATION = 150
# A resize on Postgres starts up to 1,024 shards, each with its own connection pool: 1.5 s a
# case (220 s of the suite at 150). Its database failure is tested on its own
# (tests/api/test_elastic_shards.py); here a few cases keep its error answers in check.
SLOW_CASES = {("POST /v1/shards", "postgres"): 20}


@pytest.fixture(params=["memory", "postgres"])
def base_url(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, str], str]]:
    """The real app on loopback, over the memory store or the embedded Postgres (emptied):
    some inputs only break on a real database (a NUL, an integer beyond bigint)."""
    if request.param == "memory":
        url = "memory://fuzz"
    else:
        request.getfixturevalue("embedded_engine")
        url = request.getfixturevalue("embedded_pg_url")
    system = auth.system(Settings(shards=2, max_batch_events=50), url,
                         ThreadedEncoder(HashingEncoder(dim=32)))
    with serving(system) as (base, headers):
        items = [{"id": f"m{k}", "title": f"Film {k}", "description": "a film",
                  "tags": ["Drama"]} for k in range(5)]
        assert httpx.post(f"{base}/v1/items", json={"items": items}, timeout=30,
                          headers=headers).status_code == 200
        yield base, headers, request.param
    if request.param == "memory":
        forget_memory(url)


def test_no_generated_request_breaks_the_api(base_url: tuple[str, dict[str, str], str]) -> None:
    base, headers, store = base_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    seen: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = f"{operation.method.upper()} {operation.path}"
        cases = SLOW_CASES.get((key, store), CASES_PER_OPERATION)
        _fuzz(operation, key, base, headers, seen, cases)
    # Routes without parameters are generated once each; the others CASES_PER_OPERATION times.
    assert len(seen) >= 12 and sum(seen.values()) >= 1000, seen


def _fuzz(
    operation: Any, key: str, base_url: str, headers: dict[str, str], seen: dict[str, int],
    cases: int,
) -> None:
    @given(case=operation.as_strategy())
    @settings(max_examples=cases, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck), database=None)
    def check(case: Any) -> None:
        # With an admin token, so that cases reach the routes (401s are tested elsewhere).
        response = case.call(base_url=base_url, timeout=30, headers=headers)
        seen[key] = seen.get(key, 0) + 1
        assert response.status_code < 500 or response.status_code == 503, (
            case.as_curl_command(), response.status_code, response.text[:500])
        if response.status_code >= 400:
            body = response.json()
            assert {"error", "message"} <= set(body), (key, body)  # the documented body

    check()
