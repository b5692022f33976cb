"""What the HTTP routes work with: the shards, the stores, the catalog, and start-up.

The composition root builds one :class:`ApiContext` per ingress process. Start-up is lazy
and runs once (:meth:`ApiContext.ready`): connect the encoder, publish the catalog, wait for
every shard. Until it has finished, requests wait for it and ``/readyz`` says why it is not
ready, so a client that calls while the service is still starting gets an answer, not a
refused connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.catalog_publisher import CatalogPublisher
from actors.catalog_view import CatalogSink, ViewKey, newer
from actors.dependencies import EncoderConnector
from actors.shard_service import ProfileReport, Recommendations, UserOutcome
from portrait.erasure import ErasureRecord
from portrait.errors import EncoderUnavailable, NotReady
from portrait.inspection import ProfileDiff
from portrait.routing import owner_index
from serve.api.auth import Authenticator
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
    async def erase(self, user_id: str, requested_by: str,
                    now: float) -> ErasureRecord | None: ...
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
    catalog_refresh_s: float = 10.0
    max_future_skew_s: float = 86_400.0
    max_body_bytes: int = 32 * 1024 * 1024


_log = logging.getLogger(__name__)


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
        auth: Authenticator | None = None,
        pseudonym: Callable[[str], str] | None = None,
    ) -> None:
        self.shards = list(shards)
        self.auth = auth  # None: PORTRAIT_AUTH=off
        self.pseudonym = pseudonym  # None: ids are stored as given
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
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._seen_key: ViewKey = (-1, -1, -1)  # the cluster's view when we started

    def internal(self, user_id: str) -> str:
        """The id the log and the shards know the user by."""
        return user_id if self.pseudonym is None else self.pseudonym(user_id)

    def shard_for(self, user_id: str) -> Shard:
        return self.shards[owner_index(user_id, self.names)]

    def shard_index(self, user_id: str) -> int:
        return owner_index(user_id, self.names)

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
        if self._publisher is not None:
            return self._publisher.version
        return self._seen_key[0]

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
        self._seen_key = await self._sink.current_key()
        if self._seen_key[0] < 0:  # nothing published yet: the shards need our view
            await self._connect_catalog()
        await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
        await asyncio.gather(*(s.ready() for s in self.shards))
        if self._publisher is None and self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect_catalog_later())

    async def _connect_catalog(self) -> None:
        """Connect the encoder, publish the catalog and start watching the stores."""
        encoder = await self._encoder.connect()
        catalog = self.stores.catalog(encoder)
        publisher = CatalogPublisher(
            catalog, self.stores.item_spaces, encoder, self._sink, self._alphas
        )
        await publisher.publish(force=True)
        self._catalog, self._publisher = catalog, publisher
        self._watcher = asyncio.ensure_future(self._watch(self.limits.catalog_refresh_s))

    async def _connect_catalog_later(self) -> None:
        delay = 0.5
        while self._publisher is None:
            try:
                await self._connect_catalog()
                await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
            except Exception as exc:  # the encoder is still away: try again
                _log.info("catalog not connected yet (%s); retrying in %.1f s",
                          type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)

    async def _watch(self, every_s: float) -> None:
        """Republish whenever the stores hold something newer than the last view: items
        written by another process (the first run's catalog import, ``portrait
        import-catalog``, another ingress replica), an item space trained elsewhere
        (``portrait train-items``), new interactions for the popularity prior. Without it, a
        shard that started during the first run's import kept an empty catalog for good."""
        assert self._publisher is not None
        while True:
            await asyncio.sleep(every_s)
            before = self._publisher.key
            try:
                # A registry that restarted has lost what it held: publish ours again.
                lost = newer(before, await self._sink.current_key())
                await self._publisher.publish(force=lost)
                if lost or self._publisher.key != before:
                    await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
            except Exception as exc:  # the previous view stays; the next round tries again
                _log.warning("catalog refresh failed (the current view stays): %s",
                             type(exc).__name__, exc_info=exc)

    async def close(self) -> None:
        """Stop the catalog watcher."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def publish_catalog(self, *, force: bool = False) -> int:
        """Publish the catalog (and the newest item space) if either changed, and tell every
        shard; returns the catalog version."""
        if self._publisher is None:
            raise EncoderUnavailable("the catalog cannot be published until the text encoder "
                                     "answers")
        version = await self._publisher.publish(force=force)
        await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
        return version
