"""What the HTTP routes work with: the shards, the stores, the catalog, and start-up.

The composition root builds one :class:`ApiContext` per ingress process. Start-up is lazy
and runs once (:meth:`ApiContext.ready`): connect the encoder, publish the catalog, wait for
every shard. Until it has finished, requests wait for it and ``/readyz`` says why it is not
ready, so a client that calls while the service is still starting gets an answer, not a
refused connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.catalog_publisher import CatalogPublisher
from actors.catalog_view import CatalogSink, ViewKey
from actors.dependencies import EncoderConnector
from actors.shard_service import ProfileReport, Recommendations, UserOutcome
from portrait.inspection import ProfileDiff
from portrait.routing import owner_index
from storage.catalog import ItemCatalog
from storage.stores import Stores


class Shard(Protocol):
    """A shard as the API calls it: a local ShardService or a proxy to a Ray actor."""

    name: str

    async def ingest(self, batches: dict[str, list[bytes]]) -> dict[str, UserOutcome]: ...
    async def recommend(self, user_id: str, k: int, diversity: float, tags: list[str],
                        exclude: list[str]) -> Recommendations: ...
    async def profile(self, user_id: str, at_seq: int | None, at_time: float | None,
                      top: int) -> ProfileReport: ...
    async def changes(self, user_id: str, from_seq: int, to_seq: int | None,
                      top: int) -> ProfileDiff: ...
    async def stats(self) -> dict[str, Any]: ...
    async def refresh_catalog(self) -> ViewKey: ...
    async def ready(self) -> bool: ...


class Retraining(Protocol):
    """The background item-space retrain, as the API drives it (in this process, or a Ray
    actor)."""

    async def note_events(self, count: int) -> None: ...
    async def retrain(self) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ApiLimits:
    max_batch_events: int = 1000
    popularity_refresh_s: float = 30.0
    max_future_skew_s: float = 86_400.0


_log = logging.getLogger(__name__)


def _log_failure(done: asyncio.Future[int]) -> None:
    if not done.cancelled() and done.exception() is not None:
        _log.warning("popularity refresh failed (the previous prior stays): %r", done.exception())


EncoderStats = Callable[[], Awaitable[Mapping[str, Any] | None]]


async def _no_encoder_stats() -> Mapping[str, Any] | None:
    return None


class ApiContext:
    """The ingress's dependencies (given, never built here) and its lazy start-up."""

    def __init__(
        self,
        shards: Sequence[Shard],
        stores: Stores,
        encoder: EncoderConnector,
        catalog_sink: CatalogSink,
        limits: ApiLimits = ApiLimits(),
        encoder_stats: EncoderStats = _no_encoder_stats,
        alphas: Sequence[float] = (),
        retraining: Retraining | None = None,
    ) -> None:
        self.shards = list(shards)
        self.names = [s.name for s in self.shards]
        self.stores = stores
        self.limits = limits
        self.encoder_stats = encoder_stats
        self._encoder = encoder
        self._sink = catalog_sink
        self._alphas = tuple(alphas)
        self.retraining = retraining
        self._catalog: ItemCatalog | None = None
        self._publisher: CatalogPublisher | None = None
        self._start: asyncio.Task[None] | None = None
        self._published_at = 0.0  # time.monotonic() of the last publication
        self._refresh: asyncio.Future[int] | None = None

    def shard_for(self, user_id: str) -> Shard:
        return self.shards[owner_index(user_id, self.names)]

    def shard_index(self, user_id: str) -> int:
        return owner_index(user_id, self.names)

    @property
    def catalog(self) -> ItemCatalog:
        assert self._catalog is not None, "ready() first"
        return self._catalog

    @property
    def catalog_version(self) -> int:
        return self._publisher.version if self._publisher is not None else -1

    async def ready(self) -> None:
        """Start once; concurrent callers share the attempt, and a failed attempt is
        retried by the next caller."""
        if self._start is None or (self._start.done() and self._start.exception()):
            self._start = asyncio.ensure_future(self._started())
        await asyncio.shield(self._start)

    async def _started(self) -> None:
        encoder = await self._encoder.connect()
        catalog = self.stores.catalog(encoder)
        publisher = CatalogPublisher(
            catalog, self.stores.item_spaces, encoder, self._sink, self._alphas
        )
        await publisher.publish(force=True)
        await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
        await asyncio.gather(*(s.ready() for s in self.shards))
        self._catalog, self._publisher = catalog, publisher

    async def publish_catalog(self, *, force: bool = False) -> int:
        """Publish the catalog (and the newest item space) if either changed, and tell every
        shard; returns the catalog version."""
        assert self._publisher is not None, "ready() first"
        self._published_at = time.monotonic()
        version = await self._publisher.publish(force=force)
        await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
        return version

    def events_recorded(self) -> None:
        """New events are in the log: republish (popularity moved) in the background, at most
        once per ``limits.popularity_refresh_s`` and one publication at a time, so a new user's
        prior follows what is popular now rather than at the last retrain."""
        if self._publisher is None or (self._refresh is not None and not self._refresh.done()):
            return
        if time.monotonic() - self._published_at < self.limits.popularity_refresh_s:
            return
        self._refresh = asyncio.ensure_future(self.publish_catalog())
        self._refresh.add_done_callback(_log_failure)
