"""The Python client against the real routes (in process; the sync client against the Ray
service is in tests/serve)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from actors.text_features import ThreadedEncoder
from portrait_client import (
    AsyncClient,
    InvalidRequest,
    NotFound,
    RateLimited,
    Unauthorized,
    event,
)
from serve.composition import InProcessSystem
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
ITEMS = [{"id": f"m{k}", "title": f"Film {k}", "description": "space adventure" if k < 3
          else "kitchen drama", "tags": ["SciFi" if k < 3 else "Drama"]} for k in range(6)]


@pytest_asyncio.fixture(loop_scope="session")
async def system() -> AsyncIterator[InProcessSystem]:
    sys_ = auth.system(Settings(shards=2, rate_limit_rps=1), "memory://client",
                       ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        yield sys_
    finally:
        await sys_.close()
        forget_memory("memory://client")


async def client_for(system: InProcessSystem, **kwargs: object) -> AsyncClient:
    token = (await auth.headers(system))["authorization"].split()[1]
    return AsyncClient("http://portrait", token=token,
                       transport=httpx.ASGITransport(app=system.app), **kwargs)  # type: ignore[arg-type]


async def test_events_recommendations_profile_and_audit(system: InProcessSystem) -> None:
    async with await client_for(system) as portrait:
        await portrait.upsert_items(ITEMS)
        events = [event("rating", "ana", occurred_at=T0 + k, item_id=f"m{k}", rating=5.0)
                  for k in range(3)]
        events.append(event("search", "ana", occurred_at=T0 + 9, query="space adventure"))
        summary = await portrait.send_events(events, batch_size=2)
        assert (summary.recorded, summary.duplicates, summary.batches) == (4, 0, 2)
        # Sending the same events again (a resumed import) records nothing twice.
        again = await portrait.send_events(events)
        assert (again.recorded, again.duplicates) == (0, 4)
        recs = await portrait.recommendations("ana", k=3)
        assert recs["user_id"] == "ana" and len(recs["items"]) == 3
        profile = await portrait.profile("ana", top=5)
        assert profile["event_count"] == 4 and profile["counts"] == {"rating": 3, "search": 1}
        audit = [e async for e in portrait.audit("ana", page=3)]  # two pages
        assert [e["seq"] for e in audit] == [1, 2, 3, 4]
        assert (await portrait.item("m1"))["title"] == "Film 1"


async def test_errors_carry_the_field_and_refusals_are_collected(
    system: InProcessSystem,
) -> None:
    async with await client_for(system) as portrait:
        with pytest.raises(InvalidRequest) as bad:
            await portrait.post_events([event("rating", "bo", item_id="m1", rating=9)])
        assert bad.value.field == "events[0].rating" and bad.value.status == 422
        with pytest.raises(NotFound):
            await portrait.profile("nobody-here")
        # One user's batch refused (an id reused with other content), the other recorded.
        first = event("view", "cy", item_id="m1", event_id="fixed-1", occurred_at=T0)
        await portrait.post_events([first])
        clash = dict(first, item_id="m2")
        summary = await portrait.send_events([clash, event("view", "di", item_id="m2")])
        assert summary.recorded == 1 and [i for i, _ in summary.failed] == [0]
        assert summary.failed[0][1]["error"] == "EventIdConflict"
    async with AsyncClient("http://portrait", token="",
                           transport=httpx.ASGITransport(app=system.app)) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.recommendations("ana")


async def test_a_429_is_retried_after_retry_after(system: InProcessSystem) -> None:
    """The service here allows one request per second per token (bursts of two): the third
    call in a row gets 429 with Retry-After, and the client waits and succeeds (503s take
    the same path)."""
    async with await client_for(system) as portrait:
        began = time.monotonic()
        for _ in range(4):
            assert (await portrait.ready())["status"] == "ready"  # no token needed
            await portrait.recommendations("someone")
        assert time.monotonic() - began >= 0.9  # it waited for the allowance
    async with await client_for(system, max_retries=0) as impatient:
        await impatient.recommendations("someone")
        await impatient.recommendations("someone")
        with pytest.raises(RateLimited) as limited:
            await impatient.recommendations("someone")
        assert limited.value.status == 429 and "per second" in limited.value.message
