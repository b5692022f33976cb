"""Changing the shard set: resize with the hand-off protocol, retire later, autoscale.

:class:`ShardController` is the only writer of the topology from this process: it takes the
directory's resize lease, starts and retires shards through the fleet, and tells its
:class:`~actors.shard_router.ShardRouter` what to route by. No Ray in here: the fleet and the
directory are given (local objects, or Ray actors behind proxies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from actors.shard_fleet import Fleet
from actors.shard_router import ShardDirectoryLike, ShardRouter
from portrait.errors import InvalidField, ResizeInProgress
from portrait.routing import Topology, shard_names
from portrait.scaling import MAX_SHARDS, ShardLoad, ShardScaling, desired_shards

_log = logging.getLogger(__name__)


class ShardController:
    """Resizes the shard set, one resize at a time cluster-wide.

    Args:
        router: what this process routes by; told of every new topology.
        fleet: starts and stops shards by name.
        directory: the cluster's topology and its resize lease.
        max_shards: the most shards a resize may ask for (``PORTRAIT_SHARDS_MAX``, else what
            the cluster can place): a bigger count is refused before anything starts.
        scaling: the autoscaler's policy; None for resizes on request only.
        grace_s: how long removed shards keep running after a resize, so that every other
            ingress has followed the new topology before they go.
    """

    def __init__(self, router: ShardRouter, fleet: Fleet, directory: ShardDirectoryLike,
                 max_shards: int, scaling: ShardScaling | None = None,
                 grace_s: float = 20.0) -> None:
        if max_shards < 1:
            raise ValueError("max_shards must be at least 1")
        self.router = router
        self.fleet = fleet
        self._directory = directory
        self.max_shards = max_shards
        self._scaling = scaling
        self._grace_s = grace_s
        self._lock = asyncio.Lock()
        self._holder = f"ingress-{uuid.uuid4().hex[:12]}"
        self._retiring: set[asyncio.Task[None]] = set()

    def check_count(self, count: int) -> None:
        """Refuse a count outside 1..max_shards (:class:`InvalidField` on ``count``)."""
        if not 1 <= count <= self.max_shards:
            raise InvalidField(
                "count", f"must be between 1 and {self.max_shards} (the most shards this "
                         "cluster runs: PORTRAIT_SHARDS_MAX, else what its CPUs can place)")

    async def resize(self, count: int) -> dict[str, Any]:
        """Change the number of shards, without stopping traffic.

        1. Take the directory's resize lease (one resize at a time, cluster-wide).
        2. Start the added shards and give them the catalog.
        3. Tell every shard, old and new, the new topology. A shard that loses users hands
           them off: each user's in-flight calls finish, a snapshot is written, the user is
           dropped, and further calls for them are refused (:class:`NotOwner`). Only when
           all have done so does step 4 run, so a user never has two writers (and the log's
           ``expected_version`` would refuse a second writer's append anyway).
        4. Publish the topology in the directory and route by it. Other ingress replicas
           follow at a shard's first refusal, or within their next control tick.
        5. Retire removed shards after a grace period (late callers get a refusal, then
           re-route).

        A moved user's requests wait for steps 3-4 (the hand-off pause); the new owner loads
        them from their snapshot and the log's tail, so reads never see a stale profile.
        """
        self.check_count(count)
        router = self.router
        async with self._lock:
            await router.follow_topology()
            old = router.topology
            if count == len(old.names):
                return {"epoch": old.epoch, "shards": list(old.names), "moved": 0.0,
                        "seconds": 0.0}
            new = Topology(old.epoch + 1, shard_names(count))
            if not await self._directory.begin_resize(self._holder, old.epoch, 120.0):
                raise ResizeInProgress("another resize is in progress; retry when it is done")
            started = time.perf_counter()
            try:
                added = [n for n in new.names if not router.known(n)]
                if added:
                    await self._start_shards(added)
                everyone = sorted(set(old.names) | set(new.names))
                answers = await asyncio.gather(
                    *(router.shard(n).set_topology(new.epoch, list(new.names))
                      for n in everyone), return_exceptions=True)
                for name, answer in zip(everyone, answers, strict=True):
                    if isinstance(answer, BaseException):  # down: it reads the directory
                        _log.warning("shard %s missed epoch %d (%r); it adopts it at its "
                                     "restart", name, new.epoch, answer)
                if not await self._directory.publish(self._holder, new):
                    raise ResizeInProgress("the resize lease was lost; retry")
            except BaseException:
                await self._directory.release(self._holder)
                raise
            router.route_by(new)
            seconds = time.perf_counter() - started
            removed = [n for n in old.names if n not in new.names]
            if removed:
                task = asyncio.ensure_future(self._retire_later(removed))
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            _log.info("shards %d -> %d (epoch %d) in %.2f s", len(old.names), count,
                      new.epoch, seconds)
            return {"epoch": new.epoch, "shards": list(new.names),
                    "moved": 1.0 - min(len(old.names), count) / max(len(old.names), count),
                    "seconds": round(seconds, 3)}

    async def _start_shards(self, names: list[str]) -> None:
        """Start the added shards with the catalog; if any cannot start (the database is
        out of connections, say), stop them all again and raise: the resize is abandoned
        before any user moved."""
        started = await self.fleet.attach(names)
        # return_exceptions: every start has finished (or failed) before any is stopped; a
        # start still running when its shard was stopped would open a pool nobody closes.
        for step in ("refresh_catalog", "ready"):
            answers = await asyncio.gather(*(getattr(s, step)() for s in started.values()),
                                           return_exceptions=True)
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                await self.fleet.retire(names)
                raise failed
        self.router.add(started)

    async def _retire_later(self, names: list[str]) -> None:
        await asyncio.sleep(self._grace_s)
        # Under the resize lock: a resize back up that began during the grace period still
        # routes to these shards (it found them running and did not start them again), so
        # they may only go once it is done, and only if it did not bring them back.
        async with self._lock:
            names = [n for n in names if n not in self.router.topology.names]
            if not self.router.topology.names or not names:
                return
            await self.fleet.retire(names)
            self.router.forget(names)

    async def autoscale(self) -> dict[str, Any] | None:
        """One step of the shard autoscaler: resize when the measured load asks for
        another count (:func:`portrait.scaling.desired_shards`). None when it did not."""
        if self._scaling is None:
            return None
        stats = await asyncio.gather(*(s.stats() for s in self.router.shards))
        loads = [ShardLoad(int(st.get("active_users", 0)), int(st.get("pending_events", 0)),
                           int(st.get("calls_in_flight", 0))) for st in stats]
        want = min(desired_shards(loads, self._scaling), self.max_shards)
        if want == len(loads):
            return None
        try:
            return await self.resize(want)
        except ResizeInProgress:
            return None  # another replica is already at it

    async def close(self) -> None:
        """Cancel pending retirements (their shards close with the system; on Ray, the next
        resize or a redeploy retires them)."""
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def resize_bound(shards_max: int, cpus: float, shards_per_cpu: int = 4,
                 at_least: int = 1) -> int:
    """The most shards a manual resize may ask for: ``PORTRAIT_SHARDS_MAX`` when set (> 0),
    else ``shards_per_cpu`` per CPU of the cluster (each shard is a process with its own
    event loop and pools; measured: 145 asked on 2 cores started 72 processes, 10 GB,
    before the request timed out), never below ``at_least`` (the configured first count)
    nor above :data:`portrait.scaling.MAX_SHARDS`."""
    if shards_max > 0:
        return min(shards_max, MAX_SHARDS)
    return max(at_least, min(MAX_SHARDS, int(cpus * shards_per_cpu)))


__all__ = ["ShardController", "resize_bound"]
