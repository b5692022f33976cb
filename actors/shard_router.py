"""Which shard serves a user: the topology this process routes by, and a handle per name.

:class:`ShardRouter` is what every request uses (and the catalog's publication, to reach
the shards of the live topology). It adopts a newer topology from the directory when a shard
refuses a user (:class:`~portrait.errors.NotOwner`) or when asked, so a hand-off costs a
caller a short wait, not an error. It never starts or stops shards: the
:class:`~actors.shard_controller.ShardController` does, and tells it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from actors.catalog_view import ViewKey
from actors.host import Outcome
from actors.shard_fleet import ShardAttacher
from actors.shard_service import ProfileReport, Recommendations
from portrait.erasure import ErasureRecord
from portrait.errors import NotOwner, ShardUnavailable
from portrait.inspection import ProfileDiff
from portrait.routing import Topology

T = TypeVar("T")


class Shard(Protocol):
    """A shard as callers use it: a local ShardService or a proxy to a Ray actor."""

    name: str

    async def ingest(self, batches: dict[str, list[bytes]]) -> dict[str, Outcome]: ...
    async def recommend(self, user_id: str, k: int, diversity: float, tags: list[str],
                        exclude: list[str], request_id: str = "") -> Recommendations: ...
    async def profile(self, user_id: str, at_seq: int | None, at_time: float | None,
                      top: int) -> ProfileReport: ...
    async def changes(self, user_id: str, from_seq: int, to_seq: int | None,
                      top: int) -> ProfileDiff: ...
    async def erase(self, user_id: str, requested_by: str,
                    now: float) -> ErasureRecord | None: ...
    async def stats(self) -> dict[str, Any]: ...
    async def refresh_catalog(self) -> ViewKey: ...
    async def ready(self) -> bool: ...
    async def set_topology(self, epoch: int, names: list[str]) -> int: ...


class ShardDirectoryLike(Protocol):
    """:class:`actors.shard_fleet.ShardDirectory`, local or behind a Ray actor handle."""

    async def current(self) -> Topology: ...
    async def initialise(self, topology: Topology) -> Topology: ...
    async def begin_resize(self, holder: str, epoch: int, lease_s: float) -> bool: ...
    async def publish(self, holder: str, topology: Topology) -> bool: ...
    async def release(self, holder: str) -> None: ...


class ShardRouter:
    """Routes by a topology and follows the directory's.

    Args:
        shards: the shards of the first topology (epoch 0 until the directory is read).
        directory: where the cluster's topology is kept; None for a fixed set of shards.
        fleet: gives a handle for a shard name this router has not seen (one another
            process started); its ``attach`` must not start shards that are not running
            in a system where only the controller may.
    """

    def __init__(self, shards: Sequence[Shard], directory: ShardDirectoryLike | None = None,
                 fleet: ShardAttacher | None = None) -> None:
        self._by_name: dict[str, Shard] = {s.name: s for s in shards}
        self.topology = Topology(0, tuple(s.name for s in shards))
        self.directory = directory
        self._fleet = fleet

    @property
    def shards(self) -> list[Shard]:
        """The shards of the current topology, in its order."""
        return [self._by_name[n] for n in self.topology.names]

    @property
    def names(self) -> list[str]:
        return list(self.topology.names)

    def known(self, name: str) -> bool:
        """Whether this router holds a handle for shard ``name``."""
        return name in self._by_name

    def shard(self, name: str) -> Shard:
        """The handle of shard ``name`` (current, retiring or just started)."""
        return self._by_name[name]

    def shard_for(self, user_id: str) -> Shard:
        return self._by_name[self.topology.owner(user_id)]

    def add(self, shards: Mapping[str, Shard]) -> None:
        """Handles of shards just started (the controller's resize)."""
        self._by_name.update(shards)

    def forget(self, names: Sequence[str]) -> None:
        """Drop the handles of retired shards."""
        for name in names:
            self._by_name.pop(name, None)

    def route_by(self, topology: Topology) -> None:
        """Route by ``topology`` (the controller published it); every name must be known."""
        if topology.epoch > self.topology.epoch:
            self.topology = topology

    async def on_owner(self, user_id: str, call: Callable[[Shard], Awaitable[T]]) -> T:
        """``call`` on the shard that owns the user. When the shard set has changed (the
        shard says the user moved, or is gone), route again by the new one: a hand-off costs
        the caller a short wait, not an error."""
        for attempt in range(4):
            routed_by = self.topology.epoch
            try:
                return await call(self.shard_for(user_id))
            except ShardUnavailable as exc:
                moved = isinstance(exc, NotOwner)
                if attempt == 3 or not await self.follow_topology(
                        routed_by, wait_s=5.0 if moved else 0):
                    raise
        raise AssertionError("unreachable")

    async def follow_topology(self, since: int | None = None, wait_s: float = 0.0) -> bool:
        """Adopt the directory's topology if it is newer than ours, waiting up to ``wait_s``
        for one (a shard refused a user: a resize is being published). True if this router
        now routes by a newer topology than epoch ``since`` (default: ours on entry)."""
        since = self.topology.epoch if since is None else since
        if self.directory is None:
            return False
        deadline = time.monotonic() + wait_s
        while True:
            current = await self.directory.current()
            if current.epoch > self.topology.epoch:
                await self.adopt(current)
            if self.topology.epoch > since:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def adopt(self, topology: Topology) -> None:
        """Route by ``topology``, attaching to shards not seen before."""
        missing = [n for n in topology.names if n not in self._by_name]
        if missing:
            if self._fleet is None:
                raise ShardUnavailable(f"no handle for shards {missing} in this process")
            self._by_name.update(await self._fleet.attach(missing))
        self.route_by(topology)

    async def initialise(self) -> None:
        """Route by the cluster's topology (it may have been resized since this process's
        arguments were made); a new or restarted directory learns ours."""
        if self.directory is not None:
            first = Topology(1, self.topology.names)
            await self.adopt(await self.directory.initialise(first))

    async def live(self) -> list[Shard]:
        """The shards of the directory's current topology (what a catalog change must reach:
        never the set some earlier process was given)."""
        await self.follow_topology()
        return self.shards


__all__ = ["Shard", "ShardDirectoryLike", "ShardRouter"]
