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
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from actors.catalog_publisher import CatalogPublisher
from actors.catalog_view import CatalogSink, ViewKey, newer
from actors.dependencies import EncoderConnector
from actors.shard_fleet import Fleet
from actors.shard_service import ProfileReport, Recommendations, UserOutcome
from portrait.erasure import ErasureRecord
from portrait.errors import (
    EncoderUnavailable,
    InvalidField,
    NotOwner,
    NotReady,
    ResizeInProgress,
    ShardUnavailable,
)
from portrait.inspection import ProfileDiff
from portrait.routing import Topology, shard_names
from portrait.scaling import MAX_SHARDS, ShardLoad, ShardScaling, desired_shards
from serve.api.auth import Authenticator
from serve.experiments import Experiments
from serve.summary_service import SummaryService
from storage.catalog import ItemCatalog
from storage.stores import Stores


class Shard(Protocol):
    """A shard as the API calls it: a local ShardService or a proxy to a Ray actor."""

    name: str

    async def ingest(self, batches: dict[str, list[bytes]]) -> dict[str, UserOutcome]: ...
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


T = TypeVar("T")


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
        fleet: Fleet | None = None,
        directory: ShardDirectoryLike | None = None,
        scaling: ShardScaling | None = None,
    ) -> None:
        self.auth = auth  # None: PORTRAIT_AUTH=off
        self.pseudonym = pseudonym  # None: ids are stored as given
        # The shard set this replica routes by. With a fleet and a directory it can change at
        # run time (:meth:`resize`); without, it is fixed.
        self._by_name: dict[str, Shard] = {s.name: s for s in shards}
        self.topology = Topology(0, tuple(s.name for s in shards))
        self._fleet = fleet
        self._directory = directory
        self._scaling = scaling
        self._resize_lock = asyncio.Lock()
        self._holder = f"ingress-{uuid.uuid4().hex[:12]}"
        self._retiring: set[asyncio.Task[None]] = set()
        self.stores = stores
        self.limits = limits
        self.encoder_stats = encoder_stats
        # GET /v1/users/{id}/summary (serve.summary_service); set by the composition root.
        self.summaries: SummaryService | None = None
        self._encoder = encoder
        self._sink = catalog_sink
        self._alphas = tuple(alphas)
        self.retraining = retraining
        # Impressions and experiment reports (serve.experiments); set by the composition root.
        self.experiments: Experiments | None = None
        self._catalog: ItemCatalog | None = None
        self._publisher: CatalogPublisher | None = None
        self._start: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._seen_key: ViewKey = (-1, -1, -1)  # the cluster's view when we started

    def internal(self, user_id: str) -> str:
        """The id the log and the shards know the user by."""
        return user_id if self.pseudonym is None else self.pseudonym(user_id)

    @property
    def shards(self) -> list[Shard]:
        """The shards of the current topology, in its order."""
        return [self._by_name[n] for n in self.topology.names]

    @property
    def names(self) -> list[str]:
        return list(self.topology.names)

    def shard_for(self, user_id: str) -> Shard:
        return self._by_name[self.topology.owner(user_id)]

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
        for one (a shard refused a user: a resize is being published). True if this replica
        now routes by a newer topology than epoch ``since`` (default: ours on entry)."""
        since = self.topology.epoch if since is None else since
        if self._directory is None:
            return False
        deadline = time.monotonic() + wait_s
        while True:
            current = await self._directory.current()
            if current.epoch > self.topology.epoch:
                await self._adopt(current)
            if self.topology.epoch > since:
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.02)

    async def _adopt(self, topology: Topology) -> None:
        missing = [n for n in topology.names if n not in self._by_name]
        if missing:
            assert self._fleet is not None
            self._by_name.update(await self._fleet.attach(missing))
        if topology.epoch > self.topology.epoch:
            self.topology = topology

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
           follow at a shard's first refusal, or within their catalog refresh.
        5. Retire removed shards after a grace period (late callers get a refusal, then
           re-route).

        A moved user's requests wait for steps 3-4 (the hand-off pause); the new owner loads
        them from their snapshot and the log's tail, so reads never see a stale profile.
        """
        if self._fleet is None or self._directory is None:
            raise InvalidField("count", "this deployment has a fixed set of shards")
        if not 1 <= count <= MAX_SHARDS:
            raise InvalidField("count", f"must be between 1 and {MAX_SHARDS}")
        async with self._resize_lock:
            await self.ready()
            await self.follow_topology()
            old = self.topology
            if count == len(old.names):
                return {"epoch": old.epoch, "shards": list(old.names), "moved": 0.0,
                        "seconds": 0.0}
            new = Topology(old.epoch + 1, shard_names(count))
            if not await self._directory.begin_resize(self._holder, old.epoch, 120.0):
                raise ResizeInProgress("another resize is in progress; retry when it is done")
            started = time.perf_counter()
            try:
                added = [n for n in new.names if n not in self._by_name]
                if added:
                    await self._start_shards(added)
                everyone = sorted(set(old.names) | set(new.names))
                answers = await asyncio.gather(
                    *(self._by_name[n].set_topology(new.epoch, list(new.names))
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
            self.topology = new
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
        assert self._fleet is not None
        started = await self._fleet.attach(names)
        # return_exceptions: every start has finished (or failed) before any is stopped; a
        # start still running when its shard was stopped would open a pool nobody closes.
        for step in ("refresh_catalog", "ready"):
            answers = await asyncio.gather(*(getattr(s, step)() for s in started.values()),
                                           return_exceptions=True)
            failed = next((a for a in answers if isinstance(a, BaseException)), None)
            if failed is not None:
                await self._fleet.retire(names)
                raise failed
        self._by_name.update(started)

    async def _retire_later(self, names: list[str]) -> None:
        # Long enough for every ingress replica to have followed the new topology (each
        # checks at its catalog refresh, and at once when a shard refuses a user).
        await asyncio.sleep(max(1.0, 2 * self.limits.catalog_refresh_s))
        # Under the resize lock: a resize back up that began during the grace period still
        # routes to these shards (it found them running and did not start them again), so
        # they may only go once it is done, and only if it did not bring them back.
        async with self._resize_lock:
            names = [n for n in names if n not in self.topology.names]
            if not self.topology.names or not names:
                return
            assert self._fleet is not None
            await self._fleet.retire(names)
            for name in names:
                self._by_name.pop(name, None)

    async def autoscale(self) -> dict[str, Any] | None:
        """One step of the shard autoscaler: resize when the measured load asks for
        another count (:func:`portrait.scaling.desired_shards`). None when it did not."""
        if self._scaling is None or self._fleet is None:
            return None
        stats = await asyncio.gather(*(s.stats() for s in self.shards))
        loads = [ShardLoad(int(st.get("active_users", 0)), int(st.get("pending_events", 0)),
                           int(st.get("calls_in_flight", 0))) for st in stats]
        want = desired_shards(loads, self._scaling)
        if want == len(loads):
            return None
        try:
            return await self.resize(want)
        except ResizeInProgress:
            return None  # another replica is already at it

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
        if self._directory is not None:
            # Route by the cluster's shard set (it may have been resized since this replica's
            # arguments were made); a new or restarted directory learns ours.
            first = Topology(1, self.topology.names)
            await self._adopt(await self._directory.initialise(first))
        self._seen_key = await self._sink.current_key()
        if self._seen_key[0] < 0:  # nothing published yet: the shards need our view
            await self._connect_catalog()
        await asyncio.gather(*(s.refresh_catalog() for s in self.shards))
        await asyncio.gather(*(s.ready() for s in self.shards))
        if self.topology.epoch > 0:
            await asyncio.gather(*(s.set_topology(self.topology.epoch, self.names)
                                   for s in self.shards))
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
                await self.follow_topology()
                await self.autoscale()
            except Exception as exc:
                _log.warning("shard topology check failed: %r", exc)
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
        """Stop the catalog watcher and pending retirements (their shards close with the
        system; on Ray, the next resize or a redeploy retires them)."""
        if self.experiments is not None:  # the impressions still queued are written
            await self.experiments.close()
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
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
