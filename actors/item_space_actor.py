"""The background retrain across a Ray cluster: one detached actor owns it.

Ingress replicas tell it how many events they recorded (fire and forget); it retrains when
due, saves the space, publishes a new catalog view through the registry and tells every
shard to pick it up. It runs with ``num_cpus=0`` and Ray's default of one BLAS thread in an
actor, so a retrain takes at most one core from serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray

from actors.catalog_publisher import CatalogPublisher
from actors.catalog_registry import NAMESPACE
from actors.catalog_view import CatalogSink
from actors.dependencies import EncoderConnector, StoresOpener
from actors.generations import detached_actor
from actors.item_space_job import ItemSpaceJob
from actors.item_space_trainer import ItemSpaceTrainer
from actors.shard import proxies
from portrait.tuned_config import CollabSettings

ACTOR_NAME = "portrait-item-space"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, enable_task_events=False)  # type: ignore[call-overload]  # see ProfileShard: every ingest notes its events here
class ItemSpaceActor:
    """Hosts the :class:`ItemSpaceJob` of the cluster."""

    def __init__(
        self,
        stores: StoresOpener,
        encoder: EncoderConnector,
        sink: CatalogSink,
        shards: Sequence[Any],
        alphas: Sequence[float],
        settings: CollabSettings,
        min_new_events: int,
        max_age_s: float,
        *,
        generation: str = "",
    ) -> None:
        self._generation = generation
        self._args = (stores, encoder, sink, list(shards), tuple(alphas), settings,
                      min_new_events, max_age_s)
        self._job: ItemSpaceJob | None = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> ItemSpaceJob:
        async with self._lock:
            if self._job is None:
                opener, connector, sink, shards, alphas, settings, min_new, max_age = self._args
                stores = await opener.open()
                encoder = await connector.connect()
                publisher = CatalogPublisher(
                    stores.catalog(encoder), stores.item_spaces, encoder, sink, alphas
                )
                trainer = ItemSpaceTrainer(stores.events, stores.item_spaces, settings,
                                           min_new_events=min_new, max_age_s=max_age)
                await trainer.load_latest()
                shard_proxies = proxies(shards)

                async def publish() -> None:
                    await publisher.publish(force=True)
                    await asyncio.gather(*(s.refresh_catalog() for s in shard_proxies))

                self._job = ItemSpaceJob(trainer, publish)
            return self._job

    async def note_events(self, count: int) -> None:
        await (await self._ready()).note_events(count)

    async def retrain(self) -> dict[str, Any]:
        return await (await self._ready()).retrain()

    async def stats(self) -> dict[str, Any]:
        return await (await self._ready()).stats()

    async def generation(self) -> str:
        return self._generation


def spawn_item_space_actor(
    stores: StoresOpener,
    encoder: EncoderConnector,
    sink: CatalogSink,
    shards: Sequence[Any],
    alphas: Sequence[float],
    settings: CollabSettings,
    min_new_events: int,
    max_age_s: float,
) -> Any:
    """The cluster's retrain actor, created if missing or of another generation (see
    :class:`ItemSpaceActor`, :mod:`actors.generations`). The shard handles are part of its
    identity: replaced shards mean a new retrain actor that notifies them."""
    arguments = (stores, encoder, sink, list(shards), tuple(alphas), settings,
                 min_new_events, max_age_s)
    identity = (stores, list(shards), tuple(alphas), settings, min_new_events, max_age_s)
    return detached_actor(ItemSpaceActor, ACTOR_NAME, NAMESPACE, arguments, identity)


class RemoteRetraining:
    """The :class:`serve.api.context.Retraining` port over the actor; event counts are sent
    without waiting, so ingest latency does not include them."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    async def note_events(self, count: int) -> None:
        self._handle.note_events.remote(count)

    async def retrain(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._handle.retrain.remote()
        return stats

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._handle.stats.remote()
        return stats
