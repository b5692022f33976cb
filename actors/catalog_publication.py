"""The one owner of catalog publication: every view the shards rank with is built here.

Catalog changes (an item upsert), new popularity, a new item space (a retrain, background or
explicit) and the periodic refresh (items or spaces written by another process) all go
through :class:`CatalogPublication`: it builds the view once (:class:`CatalogViewBuilder`),
hands it to the sink, and tells the shards of the *live* topology to pick it up. In one
process it is a plain object; across a Ray cluster one detached actor hosts it
(:mod:`actors.publication_actor`) and every ingress replica calls it, so a retrain builds
one view, not one per replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from actors.background import retry_until_done, stop_all
from actors.catalog_view import CatalogSink, ViewKey, newer
from actors.catalog_view_builder import CatalogViewBuilder
from actors.dependencies import EncoderConnector, PublisherStores, StoresOpener
from actors.item_space_job import ItemSpaceJob
from actors.item_space_trainer import ItemSpaceTrainer
from actors.ranker_trainer import CatalogRankerSources, RankerPolicy, RankerTrainer
from actors.shard_router import Shard
from portrait.errors import EncoderUnavailable
from portrait.item_space import CollabSettings

_log = logging.getLogger(__name__)
NO_VIEW: ViewKey = (-1, -1, -1)


class LiveShards(Protocol):
    """The shards of the cluster's current topology (:meth:`ShardRouter.live`)."""

    async def live(self) -> Sequence[Shard]: ...


@dataclass(frozen=True)
class RetrainPolicy:
    """When and how the collaborative item space is retrained (plain data: Ray ships it),
    and the learned ranker trained with it (None: none, the blend serves)."""

    settings: CollabSettings
    min_new_events: int = 10_000
    max_age_s: float = 3600.0
    ranker: RankerPolicy | None = None


class CatalogPublication:
    """Publishes catalog views and retrains item spaces; see the module docstring.

    Args:
        stores: opened in the process that runs this (the actor's, on Ray).
        encoder: for tag names (the tag vocabulary).
        sink: where views go (the registry on Ray).
        shards: the live shards, told after each publication.
        alphas: the collaborative shares variants rank with (blended indexes built here).
        retrain: the item-space retrain; None when no variant ranks with one.
        refresh_s: how often the stores are checked for changes made elsewhere.
        generation: the deployment generation (see :mod:`actors.generations`).
    """

    def __init__(
        self,
        stores: StoresOpener,
        encoder: EncoderConnector,
        sink: CatalogSink,
        shards: LiveShards,
        alphas: Sequence[float] = (),
        retrain: RetrainPolicy | None = None,
        refresh_s: float = 10.0,
        *,
        generation: str = "",
    ) -> None:
        self._opener = stores
        self._connector = encoder
        self._sink = sink
        self._shards = shards
        self._alphas = tuple(alphas)
        self._policy = retrain
        self._refresh_s = refresh_s
        self._generation = generation
        self._lock = asyncio.Lock()
        self._stores: PublisherStores | None = None
        self._job: ItemSpaceJob | None = None
        self._publisher: CatalogViewBuilder | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._compacting: asyncio.Future[None] | None = None

    async def start(self) -> ViewKey:
        """Open the stores and make sure a view is published; returns the sink's key.

        With nothing published yet (a new cluster) this waits for the encoder and publishes
        the first view. With a view already out (this process replaces another) it returns
        at once and connects the encoder in the background: serving needs the published
        view, not the encoder. Idempotent; a failed start is retried by the next call.
        """
        async with self._lock:
            if self._stores is None:
                stores = await self._opener.open()
                if self._policy is not None:
                    ranker = None
                    if self._policy.ranker is not None:
                        ranker = RankerTrainer(self._policy.ranker, CatalogRankerSources(
                            stores, stores.text_features, self._connector))
                    trainer = ItemSpaceTrainer(
                        stores.events, stores.item_spaces, self._policy.settings,
                        min_new_events=self._policy.min_new_events,
                        max_age_s=self._policy.max_age_s, ranker=ranker)
                    await trainer.load_latest()
                    self._job = ItemSpaceJob(trainer, self._after_retrain)
                self._stores = stores
            if self._publisher is None and not self._tasks:
                if (await self._sink.current_key())[0] < 0:
                    await self._connect()
                    await self._notify()
                self._tasks.append(asyncio.ensure_future(self._run()))
        return await self._sink.current_key()

    async def _connect(self) -> None:
        assert self._stores is not None
        encoder = await self._connector.connect()
        publisher = CatalogViewBuilder(self._stores.catalog(encoder), self._stores.item_spaces,
                                     encoder, self._sink, self._alphas)
        await publisher.publish(force=True)
        self._publisher = publisher

    async def _run(self) -> None:
        """Connect (if the start did not), then refresh every ``refresh_s``."""

        async def connect() -> None:
            await self._connect()
            await self._notify()

        if self._publisher is None:
            await retry_until_done(connect, "catalog publisher connected")
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception as exc:  # the previous view stays; the next round tries again
                _log.warning("catalog refresh failed (the current view stays): %s",
                             type(exc).__name__, exc_info=exc)

    async def refresh(self) -> ViewKey:
        """Publish whatever the stores hold that is newer than the last view: items written
        by another process (the first run's import, ``portrait import-catalog``), an item
        space trained elsewhere (``portrait train-items``), new interactions for the
        popularity prior; and publish again into a sink that lost its view (the registry
        restarted). Without it, a shard that started during the first run's import kept an
        empty catalog for good."""
        publisher = self._connected()
        lost = newer(publisher.key, await self._sink.current_key())
        await self.publish(force=lost)
        return publisher.key

    def _connected(self) -> CatalogViewBuilder:
        if self._publisher is None:
            raise EncoderUnavailable("the catalog cannot be published until the text encoder "
                                     "answers")
        return self._publisher

    async def publish(self, *, force: bool = False) -> int:
        """Publish the catalog (and the newest item space and popularity) if any changed,
        or ``force``; tell the live shards when a new view went out. Returns the catalog
        version."""
        publisher = self._connected()
        before = publisher.key
        version = await publisher.publish(force=force)
        if force or publisher.key != before:
            await self._notify()
        self._compact_if_due(publisher)
        return version

    def _compact_if_due(self, publisher: CatalogViewBuilder) -> None:
        """Fold the deltas into a new base in the background when they are many, or the
        catalog went quiet (see :meth:`CatalogViewBuilder.compaction_due`); one at a time.
        Deltas keep going out while it builds; a failed build leaves the current view."""
        if self._compacting is not None and not self._compacting.done():
            return
        if publisher.rebuild_wanted or publisher.compaction_due(quiet_s=3 * self._refresh_s):
            self._compacting = asyncio.ensure_future(self._compact(publisher))

    async def _compact(self, publisher: CatalogViewBuilder) -> None:
        try:
            done = await (publisher.rebuild() if publisher.rebuild_wanted
                          else publisher.compact())
            if done:
                await self._notify()
        except Exception as exc:  # the grown view keeps serving; the next check tries again
            _log.warning("catalog compaction failed (the current view stays): %s",
                         type(exc).__name__, exc_info=exc)

    async def publish_now(self, force: bool) -> int:
        """:meth:`publish` with ``force`` positional (how a remote caller passes it)."""
        return await self.publish(force=force)

    async def version(self) -> int:
        """The catalog version of the last view published here (-1 before the first)."""
        return self._publisher.version if self._publisher is not None else -1

    async def _notify(self) -> None:
        """Tell the shards of the current topology. A shard that does not answer (restarting,
        retired under us) is not an error of the publication: the view is in the sink, and a
        shard reads the sink at its start and on its passivation pass."""
        shards = await self._shards.live()
        answers = await asyncio.gather(*(s.refresh_catalog() for s in shards),
                                       return_exceptions=True)
        for shard, answer in zip(shards, answers, strict=True):
            if isinstance(answer, BaseException):
                _log.warning("%s was not told of the new catalog view (%r); it reads it at "
                             "its next refresh", shard.name, answer)

    async def _after_retrain(self) -> None:
        await self.publish()

    # -- the item-space retrain (the Retraining port of the API) ------------------------

    async def _retraining(self) -> ItemSpaceJob:
        if self._job is None:
            await self.start()
        if self._job is None:
            raise RuntimeError("no item-space retrain is configured")
        return self._job

    async def note_events(self, count: int) -> None:
        """Events recorded (by any ingress): a retrain may be due."""
        await (await self._retraining()).note_events(count)

    async def retrain(self) -> dict[str, Any]:
        """Retrain now with every event recorded so far, publish, return the stats."""
        return await (await self._retraining()).retrain()

    async def stats(self) -> dict[str, Any]:
        """The retrain's stats and the published catalog view (``GET /v1/item-space``)."""
        stats = await (await self._retraining()).stats()
        if self._publisher is not None:
            stats["catalog"] = self._publisher.status()
        return stats

    async def generation(self) -> str:
        return self._generation

    async def close(self) -> None:
        """Stop the refresh and the retrain triggers, and close the stores."""
        if self._compacting is not None:
            self._compacting.cancel()
        await stop_all(self._tasks)
        self._tasks = []
        if self._job is not None:
            await self._job.close()
        if self._stores is not None:
            await self._stores.close()
            self._stores = None


__all__ = ["CatalogPublication", "LiveShards", "RetrainPolicy"]
