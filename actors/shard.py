"""ProfileShard: a :class:`~actors.shard_service.ShardService` in its own Ray actor process.

Ray gives each actor its own process (~49 MiB and a slice of a core even when idle, measured
here), so one Ray actor per user cannot hold millions of users; N shards host users placed by
rendezvous hashing (:mod:`portrait.routing`). Ray restarts a shard that dies
(``max_restarts=-1``); it comes back empty and re-activates users from snapshots and the log
on first use, so nothing acknowledged is lost.

:class:`ShardProxy` lets a caller use a shard actor exactly like a ``ShardService``: the same
methods, the same :class:`~portrait.errors.PortraitError`s, and a dead shard is
:class:`~portrait.errors.ShardUnavailable`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.catalog_registry import NAMESPACE
from actors.catalog_view import CatalogFeed
from actors.dependencies import EncoderConnector, StoreOpener
from actors.generations import detached_actor
from actors.shard_fleet import ShardDirectory
from actors.shard_router import ShardRouter
from actors.shard_service import ShardService, ShardSettings
from portrait.errors import PortraitError, ShardUnavailable
from portrait.routing import Topology, shard_names

_log = logging.getLogger(__name__)


# enable_task_events=False: every ingest and recommendation is a task on a shard, and Ray
# reports each task's state changes to the GCS, which keeps up to 100,000 of them (measured:
# GCS RSS 125 -> 317 MiB over a 30-minute soak). Nobody reads them for these actors; Serve
# turns them off for its replicas for the same reason.
@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False)  # type: ignore[call-overload]  # option missing from the stub
class ProfileShard(ShardService):
    """A ShardService as a Ray actor (async: its methods share one event loop)."""


DIRECTORY_NAME = "portrait-topology"  # not "portrait-shard-...": that names shards


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False)  # type: ignore[call-overload]
class ShardDirectoryActor(ShardDirectory):
    """The cluster's :class:`ShardDirectory`. If it restarts empty, the next ingress that
    asks tells it the topology it routes by (:meth:`ShardDirectory.initialise`)."""


def shard_directory() -> Any:
    """The directory actor, created if missing (named and detached, like the shards)."""
    return ShardDirectoryActor.options(  # type: ignore[attr-defined]
        name=DIRECTORY_NAME, namespace=NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote()


class RemoteDirectory:
    """The directory actor called like a local :class:`ShardDirectory`.

    The directory lives on some node of the cluster; while it restarts (its node was lost,
    measured in the multi-node test) a call fails with Ray's actor error. Callers reach it
    from a request that a shard has just refused, so that is :class:`ShardUnavailable` (503,
    retry) for them, not an internal error.
    """

    def __init__(self, handle: Any, timeout_s: float = 30.0) -> None:
        # The same deadline and error mapping as a shard's calls.
        self._remote = ShardProxy(handle, DIRECTORY_NAME, timeout_s,
                                  what="the shard directory")

    async def current(self) -> Topology:
        topology: Topology = await self._remote.current()
        return topology

    async def initialise(self, topology: Topology) -> Topology:
        current: Topology = await self._remote.initialise(topology)
        return current

    async def begin_resize(self, holder: str, epoch: int, lease_s: float) -> bool:
        return bool(await self._remote.begin_resize(holder, epoch, lease_s))

    async def publish(self, holder: str, topology: Topology) -> bool:
        return bool(await self._remote.publish(holder, topology))

    async def release(self, holder: str) -> None:
        await self._remote.release(holder)


class DirectoryLookup:
    """What a shard calls at start to learn the current topology (picklable: it finds the
    directory by name in the shard's own process)."""

    async def __call__(self) -> Topology:
        try:
            handle = ray.get_actor(DIRECTORY_NAME, namespace=NAMESPACE)
            topology: Topology = await handle.current.remote()
        except (ValueError, RayActorError):  # no directory yet: a fixed-size system
            return Topology(0, ())
        return topology


def spawn_shards(
    names: Sequence[str],
    stores: StoreOpener,
    encoder: EncoderConnector,
    catalog: CatalogFeed,
    settings: ShardSettings,
) -> list[Any]:
    """The cluster's shard actors, created if missing. Named and detached: every ingress
    replica finds the same shards, and a replica restart does not take them down. Shards of
    another generation (settings or code of an earlier deployment) are retired and replaced
    (:mod:`actors.generations`)."""
    return [
        detached_actor(
            ProfileShard, name, NAMESPACE,
            (name, stores, encoder, catalog, settings, DirectoryLookup()),
            (name, stores, settings),
            # Across the cluster's nodes: one node's loss takes only its share of the users
            # (they come back on the others from snapshot and log).
            scheduling_strategy="SPREAD",
        )
        for name in names
    ]


@dataclass(frozen=True)
class RayFleet:
    """Shard actors started and stopped by name (what the ingress resizes with)."""

    stores: StoreOpener
    encoder: EncoderConnector
    catalog: CatalogFeed
    settings: ShardSettings
    timeout_s: float = 60.0

    async def attach(self, names: Sequence[str]) -> dict[str, Any]:
        # detached_actor waits on Ray synchronously: off the event loop.
        handles = await asyncio.to_thread(
            spawn_shards, names, self.stores, self.encoder, self.catalog, self.settings)
        return {n: ShardProxy(h, n, self.timeout_s) for n, h in zip(names, handles, strict=True)}

    async def retire(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                handle = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            try:
                await asyncio.wait_for(_awaited(handle.passivate_all.remote()), self.timeout_s)
            except Exception as exc:  # its users replay the log instead
                _log.warning("%s did not write its snapshots before retiring: %r", name, exc)
            ray.kill(handle, no_restart=True)


@dataclass(frozen=True)
class ShardLookup:
    """Handles to running shard actors by name; starts none (what a process that must not
    start shards attaches with: the catalog publication's)."""

    timeout_s: float = 60.0

    async def attach(self, names: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name in names:
            try:
                found[name] = ShardProxy(ray.get_actor(name, namespace=NAMESPACE), name,
                                         self.timeout_s)
            except ValueError:  # retired meanwhile: a newer topology follows
                continue
        return found


class ClusterShards:
    """The shards of the cluster's live topology, found through the directory actor
    (:class:`~actors.catalog_publication.LiveShards`). Picklable: it finds the directory in
    the process that calls it."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self._timeout_s = timeout_s
        self._router: ShardRouter | None = None

    def __reduce__(self) -> tuple[type[ClusterShards], tuple[float]]:
        return (ClusterShards, (self._timeout_s,))

    async def live(self) -> Sequence[Any]:
        if self._router is None:
            directory = RemoteDirectory(shard_directory(), self._timeout_s)
            self._router = ShardRouter((), directory, ShardLookup(self._timeout_s))
        await self._router.follow_topology()
        router = self._router
        # A shard of the topology that is gone (retired between the read and the lookup)
        # has no handle: it is skipped, and the next topology has no such name.
        return [router.shard(n) for n in router.topology.names if router.known(n)]


def current_names(default: int) -> tuple[str, ...]:
    """The shard names of the cluster's topology (``default`` shards if none is recorded)."""
    topology: Topology = ray.get(shard_directory().current.remote(), timeout=60)
    return topology.names if topology.epoch > 0 else shard_names(default)


def existing_shards(count: int) -> list[Any]:
    """Handles to running shard actors (for shutdown and benchmarks): the cluster's current
    set, or ``count`` when it was never resized."""
    return [ray.get_actor(name, namespace=NAMESPACE) for name in current_names(count)]


class ShardProxy:
    """A shard actor called like a local :class:`ShardService`.

    Every call has a deadline: a shard that does not answer in ``timeout_s`` (stuck on a
    database lock, overloaded) is :class:`ShardUnavailable` (503, retry) for the caller rather
    than a request that waits for ever. The call itself may still complete; an ingest retried
    with the same event ids is then answered as duplicates, so nothing is lost or doubled.
    """

    def __init__(self, handle: Any, name: str, timeout_s: float = 60.0, *,
                 what: str | None = None,
                 unavailable: type[PortraitError] = ShardUnavailable) -> None:
        self._handle = handle
        self.name = name
        self._timeout_s = timeout_s
        self._what = what or f"shard {name}"  # how errors name the callee
        self._unavailable = unavailable  # what a callee that does not answer is

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        remote = getattr(self._handle, method)

        async def call(*args: Any) -> Any:
            try:
                return await asyncio.wait_for(_awaited(remote.remote(*args)), self._timeout_s)
            except TimeoutError:
                raise self._unavailable(
                    f"{self._what} did not answer {method} within {self._timeout_s:g} s"
                ) from None
            except RayTaskError as exc:
                # Ray wraps what the actor raised (as a class named "RayTaskError(...)" that
                # the API would show); callers map Portrait's own errors.
                if isinstance(exc.cause, PortraitError):
                    raise exc.cause from None
                raise
            except RayActorError as exc:
                raise self._unavailable(
                    f"{self._what} is restarting ({type(exc).__name__})"
                ) from exc
            except asyncio.CancelledError:
                # Ray surfaces a task cancelled on the callee's side as a cancellation of
                # ours; only our own (the caller went away) may unwind as one.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                raise self._unavailable(f"{self._what} cancelled {method}") from None

        return call


def proxies(handles: Sequence[Any], timeout_s: float = 60.0) -> list[ShardProxy]:
    return [
        ShardProxy(h, n, timeout_s)
        for h, n in zip(handles, shard_names(len(handles)), strict=True)
    ]


async def _awaited(ref: Any) -> Any:
    return await ref
