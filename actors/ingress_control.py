"""One ingress process's side of the control plane: its start-up, its catalog connection
and its periodic control tick.

Start-up is lazy and runs once (:meth:`IngressControl.ready`): route by the cluster's
topology, make sure a catalog view is published, wait for every shard. Until it has
finished, requests wait for it and ``/readyz`` says why it is not ready, so a client that
calls while the service is still starting gets an answer, not a refused connection.
Publication itself is not done here: :class:`~actors.catalog_publication.CatalogPublication`
owns it, and this process only asks it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from actors.background import retry_until_done, stop_all
from actors.catalog_view import CatalogSink, ViewKey
from actors.dependencies import EncoderConnector
from actors.shard_controller import ShardController
from actors.shard_router import ShardRouter
from portrait.errors import EncoderUnavailable, InvalidField, NotReady
from portrait.ports import AsyncEncoder
from storage.catalog import ItemCatalog

_log = logging.getLogger(__name__)


class Publication(Protocol):
    """:class:`~actors.catalog_publication.CatalogPublication`, local or behind its actor."""

    async def start(self) -> ViewKey: ...
    async def publish(self, *, force: bool = False) -> int: ...


class CatalogStores(Protocol):
    """The part of the stores an ingress writes items through."""

    def catalog(self, encoder: AsyncEncoder) -> ItemCatalog: ...


class IngressControl:
    """Start-up, the item catalog and the control tick of one ingress process.

    Args:
        router: what this process routes requests by.
        publication: the cluster's catalog publication.
        sink: the published view's key (to tell a new cluster from a running one).
        encoder: the text encoder, for the catalog's own routes (item writes encode).
        stores: opens the item catalog over the connected encoder.
        controller: resizes the shard set; None for a fixed set.
        tick_s: how often the topology is followed, the autoscaler stepped and the
            publication checked (``PORTRAIT_CATALOG_REFRESH_S``).
    """

    def __init__(self, router: ShardRouter, publication: Publication, sink: CatalogSink,
                 encoder: EncoderConnector, stores: CatalogStores,
                 controller: ShardController | None = None, tick_s: float = 10.0) -> None:
        self.router = router
        self.publication = publication
        self.controller = controller
        self._sink = sink
        self._encoder = encoder
        self._stores = stores
        self._tick_s = tick_s
        self._catalog: ItemCatalog | None = None
        self._version = -1
        self._start: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def catalog(self) -> ItemCatalog:
        """The catalog, for item reads and writes; they wait for the encoder (which the
        catalog needs for its model), while events and recommendations do not."""
        if self._catalog is None:
            raise EncoderUnavailable("the catalog is not available until the text encoder "
                                     "answers (it is starting or restarting)")
        return self._catalog

    @property
    def catalog_version(self) -> int:
        """The catalog version of the newest view this process has seen published."""
        return self._version

    async def ready(self) -> None:
        """Start once; concurrent callers share the attempt, and a failed attempt is
        retried by the next caller. An attempt that was cancelled counts as failed: it used
        to stay done-and-cancelled, and every later request raised CancelledError (a bare
        500) for the life of the replica."""
        start = self._start
        if start is None or (start.done() and (start.cancelled() or start.exception())):
            start = self._start = asyncio.ensure_future(self._started())
        try:
            await asyncio.shield(start)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our caller was cancelled, not the start
            raise NotReady("the start-up was cancelled; the next request starts again") from None

    async def _started(self) -> None:
        """Ready when the shards are, which needs a published catalog view. On a cluster
        that has one (this replica replaces another, or is one more), the encoder is not
        waited for: it used to be, and a replica started while the encoder reloaded (about
        50 s on CPU) refused every event and recommendation meanwhile. Only the catalog's
        own routes wait for it (:attr:`catalog`); the connection is made in the background.
        """
        await self.router.initialise()
        new_cluster = (await self._sink.current_key())[0] < 0
        self._version = (await self.publication.start())[0]
        if new_cluster and self._catalog is None:  # the publication has just waited for it
            await self._connect()
        shards = self.router.shards
        await asyncio.gather(*(s.refresh_catalog() for s in shards))
        await asyncio.gather(*(s.ready() for s in shards))
        if self.router.topology.epoch > 0:
            await asyncio.gather(*(s.set_topology(self.router.topology.epoch,
                                                  self.router.names) for s in shards))
        if not self._tasks:
            if self._catalog is None:
                self._tasks.append(asyncio.ensure_future(self._connect_later()))
            self._tasks.append(asyncio.ensure_future(self._tick_forever()))

    async def _connect(self) -> None:
        self._catalog = self._stores.catalog(await self._encoder.connect())

    async def _connect_later(self) -> None:
        await retry_until_done(self._connect, "item catalog connected")

    async def tick(self) -> None:
        """Follow the cluster's topology, step the autoscaler, and check the publication
        (after a restart of its actor, this starts it again)."""
        try:
            await self.router.follow_topology()
            if self.controller is not None:
                await self.controller.autoscale()
        except Exception as exc:
            _log.warning("shard topology check failed: %r", exc)
        try:
            self._version = (await self.publication.start())[0]
        except Exception as exc:
            _log.warning("catalog publication check failed: %r", exc)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            await self.tick()

    async def publish(self) -> int:
        """Publish after this process wrote items (through the one publication)."""
        self._version = await self.publication.publish()
        return self._version

    async def resize(self, count: int) -> dict[str, Any]:
        """Resize the shard set to ``count`` (a count out of bounds is refused before the
        start-up is waited for)."""
        if self.controller is None:
            raise InvalidField("count", "this deployment has a fixed set of shards")
        self.controller.check_count(count)
        await self.ready()
        return await self.controller.resize(count)

    async def close(self) -> None:
        """Stop the control tick and the background connection, and pending retirements."""
        await stop_all(self._tasks)
        self._tasks = []
        if self.controller is not None:
            await self.controller.close()


__all__ = ["CatalogStores", "IngressControl", "Publication"]
