"""Schemathesis over the OpenAPI document, with all its checks: generated requests to every
route of the real app (in-process shards, memory store or the embedded Postgres) served by
uvicorn on loopback, half of them valid by the document and half not.

All checks means the document must tell the truth: every status a route answers is declared
(with the error body and its headers), a request the document allows is not refused (422),
one it forbids is (4xx), a request without the token gets 401.

Cases per operation and the seed are settings (``PORTRAIT_FUZZ_CASES``, ``PORTRAIT_FUZZ_SEED``);
the defaults keep CI at about two minutes and the same cases every run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from actors.text_features import ThreadedEncoder
from serve.api import openapi
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.live_server import serving

CASES_PER_OPERATION = int(os.environ.get("PORTRAIT_FUZZ_CASES", "30"))
SEED = int(os.environ.get("PORTRAIT_FUZZ_SEED", "0"))
# A resize on Postgres starts up to 1,024 shards, each with its own connection pool: 1.5 s a
# case. Its database failure is tested on its own (tests/api/test_elastic_shards.py); here a
# few cases keep its answers in check.
SLOW_CASES = {("POST /v1/shards", "postgres"): 10}
# Beyond schemathesis's defaults: a body over the batch limit is refused with 413; and a
# valid request about a user whom an earlier case erased is answered 410, as documented.
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429, "5xx"]
ACCEPTANCES = ["2xx", "3xx", 401, 403, 404, 409, 410, 429, "5xx"]


def config(headers: dict[str, str]) -> schemathesis.Config:
    """All checks, with the admin token as the document's bearer credentials: cases reach
    the routes, and the ignored_auth check knows what to leave out to test the token check."""
    token = headers["authorization"].removeprefix("Bearer ")
    return schemathesis.Config.from_dict({
        "auth": {"openapi": {openapi.BEARER: {"bearer": token}}},
        "checks": {"negative_data_rejection": {"expected-statuses": REFUSALS},
                   "positive_data_acceptance": {"expected-statuses": ACCEPTANCES}},
    })


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


def test_the_document_tells_the_truth(base_url: tuple[str, dict[str, str], str]) -> None:
    base, headers, store = base_url
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", config=config(headers))
    seen: dict[str, int] = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        key = f"{operation.method.upper()} {operation.path}"
        cases = SLOW_CASES.get((key, store), CASES_PER_OPERATION)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz(operation, mode, key, base, seen, max(1, cases // 2))
    # Routes without parameters are generated once or twice; the others many times.
    assert len(seen) >= 12, seen
    assert sum(seen.values()) >= CASES_PER_OPERATION * 8, seen


def _within_unstated_rules(key: str, case: Any) -> bool:
    """The rules across fields that JSON Schema cannot state (the document says them in
    words): a valid request keeps them."""
    if key == "GET /v1/users/{user_id}/profile/changes":
        query = case.query or {}
        return query.get("to_seq") is None or query["to_seq"] >= query["from_seq"]
    if key == "POST /v1/items" and isinstance(case.body, dict):
        items = case.body.get("items", ())
        ids = [item.get("id", item.get("item_id")) for item in items]
        return len(ids) == len(set(ids)) and not any(map(_brings_vector, items))
    if key == "PUT /v1/items/{item_id}" and isinstance(case.body, dict):
        return not _brings_vector(case.body)
    return True


def _brings_vector(item: Any) -> bool:
    """An item with its own vector: its width, model, finiteness and norm depend on the
    active encoder (said in words; tests/api/test_item_vectors.py holds them)."""
    keys = ("vector", "vector_b64", "vector_model")
    return isinstance(item, dict) and any(item.get(k) is not None for k in keys)


def _fuzz(
    operation: Any, mode: GenerationMode, key: str, base_url: str, seen: dict[str, int],
    cases: int,
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        strategy = strategy.filter(lambda case: _within_unstated_rules(key, case))

    @seed(SEED)
    @given(case=strategy)
    @settings(max_examples=cases, deadline=None, suppress_health_check=list(HealthCheck),
              database=None)
    def check(case: Any) -> None:
        case.call_and_validate(base_url=base_url, timeout=30)
        seen[key] = seen.get(key, 0) + 1

    try:
        check()
    except Unsatisfiable:  # a probe without inputs and open to all has nothing to get wrong
        assert mode is GenerationMode.NEGATIVE and key in ("GET /healthz", "GET /readyz"), key
