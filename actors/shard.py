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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from actors.catalog_registry import NAMESPACE
from actors.catalog_view import CatalogFeed
from actors.dependencies import EncoderConnector, StoreOpener
from actors.generations import detached_actor
from actors.shard_service import ShardService, ShardSettings
from portrait.errors import PortraitError, ShardUnavailable


# enable_task_events=False: every ingest and recommendation is a task on a shard, and Ray
# reports each task's state changes to the GCS, which keeps up to 100,000 of them (measured:
# GCS RSS 125 -> 317 MiB over a 30-minute soak). Nobody reads them for these actors; Serve
# turns them off for its replicas for the same reason.
@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0, enable_task_events=False)  # type: ignore[call-overload]  # option missing from the stub
class ProfileShard(ShardService):
    """A ShardService as a Ray actor (async: its methods share one event loop)."""


def shard_names(count: int) -> list[str]:
    return [f"portrait-shard-{i}" for i in range(count)]


def spawn_shards(
    count: int,
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
            (name, stores, encoder, catalog, settings), (name, stores, settings),
            # Across the cluster's nodes: one node's loss takes only its share of the users
            # (they come back on the others from snapshot and log).
            scheduling_strategy="SPREAD",
        )
        for name in shard_names(count)
    ]


def existing_shards(count: int) -> list[Any]:
    """Handles to running shard actors (for shutdown and benchmarks)."""
    return [ray.get_actor(name, namespace=NAMESPACE) for name in shard_names(count)]


class ShardProxy:
    """A shard actor called like a local :class:`ShardService`.

    Every call has a deadline: a shard that does not answer in ``timeout_s`` (stuck on a
    database lock, overloaded) is :class:`ShardUnavailable` (503, retry) for the caller rather
    than a request that waits for ever. The call itself may still complete; an ingest retried
    with the same event ids is then answered as duplicates, so nothing is lost or doubled.
    """

    def __init__(self, handle: Any, name: str, timeout_s: float = 60.0) -> None:
        self._handle = handle
        self.name = name
        self._timeout_s = timeout_s

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        remote = getattr(self._handle, method)

        async def call(*args: Any) -> Any:
            try:
                return await asyncio.wait_for(_awaited(remote.remote(*args)), self._timeout_s)
            except TimeoutError:
                raise ShardUnavailable(
                    f"shard {self.name} did not answer {method} within {self._timeout_s:g} s"
                ) from None
            except RayTaskError as exc:
                # Ray wraps what the actor raised; callers map Portrait's own errors.
                if isinstance(exc.cause, PortraitError):
                    raise exc.cause from None
                raise
            except RayActorError as exc:
                raise ShardUnavailable(
                    f"shard {self.name} is restarting ({type(exc).__name__})"
                ) from exc
            except asyncio.CancelledError:
                # Ray surfaces a task cancelled on the shard's side as a cancellation of
                # ours; only our own (the caller went away) may unwind as one.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                raise ShardUnavailable(f"shard {self.name} cancelled {method}") from None

        return call


def proxies(handles: Sequence[Any], timeout_s: float = 60.0) -> list[ShardProxy]:
    return [
        ShardProxy(h, n, timeout_s)
        for h, n in zip(handles, shard_names(len(handles)), strict=True)
    ]


async def _awaited(ref: Any) -> Any:
    return await ref
