"""The shard set at run time: which shards exist (the directory) and how to start and stop
them (the fleet). See :meth:`actors.shard_controller.ShardController.resize` for the
hand-off protocol.

:class:`ShardDirectory` keeps the cluster's current :class:`~portrait.routing.Topology` and a
lease on resizing it (one resize at a time, whichever ingress replica asks first). In the Ray
system it runs as a named detached actor (:mod:`actors.shard`); in one process it is a plain
object. :class:`LocalFleet` starts shards in this process (the in-process system).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from portrait.routing import Topology


class ShardDirectory:
    """The current topology, and who holds the resize lease."""

    def __init__(self) -> None:
        self._topology = Topology(0, ())
        self._lease: tuple[str, float] | None = None  # (holder, expiry, monotonic seconds)

    async def current(self) -> Topology:
        return self._topology

    async def initialise(self, topology: Topology) -> Topology:
        """Set ``topology`` if there is none yet (a new cluster, or this actor restarted and
        an ingress tells it what it routes by); returns the current one either way."""
        if self._topology.epoch == 0 or topology.epoch > self._topology.epoch:
            self._topology = topology
        return self._topology

    async def begin_resize(self, holder: str, epoch: int, lease_s: float) -> bool:
        """Take the resize lease if nobody holds it (or theirs expired) and the topology is
        still at ``epoch``."""
        now = time.monotonic()
        if self._lease is not None and self._lease[0] != holder and self._lease[1] > now:
            return False
        if epoch != self._topology.epoch:
            return False
        self._lease = (holder, now + lease_s)
        return True

    async def publish(self, holder: str, topology: Topology) -> bool:
        """Make ``topology`` current; only the lease holder may, and only one epoch on."""
        if self._lease is None or self._lease[0] != holder:
            return False
        if topology.epoch != self._topology.epoch + 1:
            return False
        self._topology, self._lease = topology, None
        return True

    async def release(self, holder: str) -> None:
        if self._lease is not None and self._lease[0] == holder:
            self._lease = None


class ShardAttacher(Protocol):
    """Gives a callable shard per name (what a router needs for names it has not seen)."""

    async def attach(self, names: Sequence[str]) -> dict[str, Any]:
        """A callable shard per name (a fleet starts any that are not running)."""
        ...


class Fleet(ShardAttacher, Protocol):
    """Starts and stops shards by name (what a resize needs)."""

    async def retire(self, names: Sequence[str]) -> None:
        """Snapshot and stop these shards (they own no users any more)."""
        ...


class LocalFleet:
    """Shards in this process, made by ``make(name)``."""

    def __init__(self, make: Callable[[str], Any], existing: Sequence[Any] = ()) -> None:
        self._make = make
        self.running: dict[str, Any] = {s.name: s for s in existing}

    async def attach(self, names: Sequence[str]) -> dict[str, Any]:
        for name in names:
            if name not in self.running:
                self.running[name] = self._make(name)
        return {name: self.running[name] for name in names}

    async def retire(self, names: Sequence[str]) -> None:
        for name in names:
            shard = self.running.pop(name, None)
            if shard is not None:
                await shard.close()


__all__ = ["Fleet", "LocalFleet", "ShardAttacher", "ShardDirectory"]
