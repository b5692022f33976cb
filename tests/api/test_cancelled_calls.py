"""A Serve call whose task is cancelled on the callee's side (the replica was killed
mid-call) raises ``asyncio.CancelledError`` in the caller. Measured with ``./dev bench
faults``: after an encoder kill and an ingress kill, every request of the new ingress replica
answered a bare 500 for good, because its start-up had ended "cancelled" and was never tried
again, and text writes got 500 instead of 503."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from portrait.errors import EncoderUnavailable
from serve.encoder_deployment import not_cancelled
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_callee_side_cancellation_is_encoder_unavailable() -> None:
    async def cancelled_by_the_callee() -> None:
        raise asyncio.CancelledError

    with pytest.raises(EncoderUnavailable):
        await not_cancelled(cancelled_by_the_callee())


async def test_our_own_cancellation_still_propagates() -> None:
    never = asyncio.Event()
    task = asyncio.ensure_future(not_cancelled(never.wait()))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


class CancelledOnce:
    """An encoder connector whose first connect ends as a killed replica's call does."""

    def __init__(self, connector: Any) -> None:
        self._connector = connector
        self.calls = 0

    async def connect(self) -> Any:
        self.calls += 1
        if self.calls == 1:
            raise asyncio.CancelledError
        return await self._connector.connect()


async def test_a_start_up_cancelled_by_a_callee_is_tried_again_by_the_next_request() -> None:
    url = "memory://cancelled-start"
    system = auth.system(Settings(shards=1), url, ThreadedEncoder(HashingEncoder(dim=32)))
    # The publication's connector is the composition root's; wrap it to fail the first
    # start (it publishes the first catalog view, so the start-up waits for it).
    publication = system.publication
    flaky = publication._connector = CancelledOnce(publication._connector)  # type: ignore[assignment]
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                 headers=await auth.headers(system)) as http:
            first = await http.get("/readyz")
            assert first.status_code == 503 and first.headers["retry-after"]
            assert "starting" in first.json()["reason"]
            second = await http.get("/readyz")
            assert second.status_code == 200, second.text
            assert flaky.calls == 2
    finally:
        await system.close()
        forget_memory(url)


class AwayThenBack:
    """An encoder connector that is away (its replica reloading) until ``back`` is set."""

    def __init__(self, connector: Any) -> None:
        self._connector = connector
        self.back = False

    async def connect(self) -> Any:
        if not self.back:
            raise EncoderUnavailable("the encoder replica is loading")
        return await self._connector.connect()


async def test_a_new_ingress_serves_events_while_the_encoder_is_away() -> None:
    """An ingress replica started on a cluster that already has a catalog used to wait for
    the encoder before serving anything: measured with `./dev bench faults`, an ingress kill
    during an encoder reload stopped all writes for 32-39 s."""
    url = "memory://encoder-away"
    system = auth.system(Settings(shards=2), url, ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await auth.headers(system)) as http:
            item = {"id": "m1", "title": "Film", "description": "a film", "tags": []}
            assert (await http.post("/v1/items", json={"items": [item]})).status_code == 200
        # A second ingress over the same shards and registry (its channel), whose encoder
        # is away, as after an ingress kill during an encoder reload.
        from actors.ingress_control import IngressControl
        from actors.shard_router import ShardRouter
        from serve.api.context import ApiContext
        from serve.api.routes import create_app
        from serve.composition import authenticator

        first = system.context
        away = AwayThenBack(first.control._encoder)  # the composition root's, wrapped
        router = ShardRouter(first.router.shards, first.router.directory, system.fleet)
        control = IngressControl(router, system.publication, first.control._sink, away,
                                 first.stores, tick_s=0.1)
        second = ApiContext(first.stores, router, control,
                            Settings(shards=2, catalog_refresh_s=0.1).api,
                            auth=authenticator(Settings(), first.stores, auth.TEST_KEY))
        app = create_app(second)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://portrait",
                                     headers=await auth.headers(system)) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["catalog_version"] >= 1
            view = {"type": "view", "event_id": "v1", "user_id": "ann", "occurred_at": 1.7e9,
                    "item_id": "m1"}
            assert (await http.post("/v1/events", json={"events": [view]})).status_code == 200
            assert (await http.get("/v1/users/ann/recommendations")).status_code == 200
            waits = await http.get("/v1/items/m1")  # the catalog's routes wait for it
            assert waits.status_code == 503 and waits.json()["error"] == "EncoderUnavailable"
            away.back = True
            for _ in range(100):  # the background connection retries with a backoff
                if (await http.get("/v1/items/m1")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            assert (await http.get("/v1/items/m1")).json()["title"] == "Film"
        await second.close()
    finally:
        await system.close()
        forget_memory(url)
