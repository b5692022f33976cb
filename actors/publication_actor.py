"""The catalog's publication across a Ray cluster: one detached actor hosts it.

:class:`CatalogPublicationActor` is :class:`~actors.catalog_publication.CatalogPublication`
as a Ray actor: every ingress replica sends it item-upsert publications, event counts and
retrain requests, and it refreshes from the stores itself, so each change is built into a
view once for the cluster. It reaches the shards through the directory's live topology
(:class:`~actors.shard.ClusterShards`), never a list of handles fixed at deploy time. It runs
with ``num_cpus=0`` and Ray's default of one BLAS thread in an actor, so a retrain takes at
most one core from serving.
"""

from __future__ import annotations

from typing import Any

import ray

from actors.catalog_publication import CatalogPublication, RetrainPolicy
from actors.catalog_registry import NAMESPACE
from actors.catalog_view import CatalogSink, ViewKey
from actors.dependencies import EncoderConnector, StoresOpener
from actors.generations import detached_actor
from actors.shard import ClusterShards, ShardProxy
from portrait.errors import NotReady

ACTOR_NAME = "portrait-catalog-publication"


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0, enable_task_events=False)  # type: ignore[call-overload]  # see ProfileShard: every ingest notes its events here
class CatalogPublicationActor(CatalogPublication):
    """The cluster's :class:`CatalogPublication` (async: one event loop)."""


def spawn_publication_actor(
    stores: StoresOpener,
    encoder: EncoderConnector,
    sink: CatalogSink,
    alphas: tuple[float, ...],
    retrain: RetrainPolicy | None,
    refresh_s: float,
    call_timeout_s: float,
) -> Any:
    """The cluster's publication actor, created if missing or of another generation
    (:mod:`actors.generations`)."""
    arguments = (stores, encoder, sink, ClusterShards(call_timeout_s), alphas, retrain,
                 refresh_s)
    identity = (stores, alphas, retrain, refresh_s, call_timeout_s)
    return detached_actor(CatalogPublicationActor, ACTOR_NAME, NAMESPACE, arguments, identity)


class RemotePublication:
    """The publication actor called like a local :class:`CatalogPublication`: the same
    methods and errors (Portrait's own, never Ray's wrappers), a deadline on each call, and
    event counts sent without waiting, so ingest latency does not include them."""

    def __init__(self, handle: Any, timeout_s: float = 600.0) -> None:
        self._handle = handle
        self._remote = ShardProxy(handle, ACTOR_NAME, timeout_s,
                                  what="the catalog publisher", unavailable=NotReady)

    async def start(self) -> ViewKey:
        key = await self._remote.start()
        return (int(key[0]), int(key[1]), int(key[2]))

    async def publish(self, *, force: bool = False) -> int:
        # Through the proxy, which passes positional arguments only.
        return int(await self._remote.publish_now(force))

    async def version(self) -> int:
        return int(await self._remote.version())

    async def note_events(self, count: int) -> None:
        self._handle.note_events.remote(count)

    async def retrain(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._remote.retrain()
        return stats

    async def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = await self._remote.stats()
        return stats
