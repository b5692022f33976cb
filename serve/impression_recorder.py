"""The ingress's impression recorder: served lists go to the store in batches, off the
request path, and the live attribution counters.

:meth:`ImpressionRecorder.record` only appends to an in-process buffer (no await, no I/O), so
a recommendation never waits for, or fails because of, the impression store. A background
task writes the buffer in one multi-row INSERT every ``flush_s`` or as soon as ``batch_rows``
rows are waiting. While the store fails, rows stay buffered and are retried; the buffer is
bounded (``capacity``), and rows that do not fit are dropped and counted
(``portrait_impressions_dropped_total``): losing some impressions skews a report a little,
blocking recommendations on Postgres would take the service down with it.

The recorder also keeps the impressions it served in the last attribution window
(:class:`portrait.attribution.Attributor`), so every ingested event is attributed as it
arrives, for the per-variant Prometheus counters. Those counters are this replica's view
(an event answering a list another replica served counts as unknown here); the report,
rebuilt from the store and the log, is the reference.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable

from portrait.attribution import Attributed, Attributor
from portrait.events import Event
from portrait.impression import Impression
from portrait.ports import ImpressionStore
from serve import metrics

_log = logging.getLogger(__name__)


class ImpressionRecorder:
    """Buffers impressions and flushes them in batches (see the module docstring)."""

    def __init__(
        self, store: ImpressionStore, *, window_s: float = 3600.0, flush_s: float = 0.25,
        batch_rows: int = 500, capacity: int = 50_000, recent: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.flush_s = flush_s
        self.batch_rows = batch_rows
        self.capacity = capacity
        self._recent_max = recent
        self._clock = clock
        self._buffer: collections.deque[Impression] = collections.deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()
        self.attributor = Attributor(window_s)
        self.dropped = 0
        self.written = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def record(self, impression: Impression) -> None:
        """Queue ``impression``; never blocks, never raises for the store's sake."""
        metrics.IMPRESSIONS.labels(variant=impression.variant).inc()
        self._remember(impression)
        if len(self._buffer) >= self.capacity:
            self.dropped += 1
            metrics.IMPRESSIONS_DROPPED.inc()
            return
        self._buffer.append(impression)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        if len(self._buffer) >= self.batch_rows:
            self._wake.set()

    def _remember(self, impression: Impression) -> None:
        self.attributor.add(impression)
        if len(self.attributor) > self._recent_max:  # bounded: forget beyond the window
            self.attributor.forget_before(self._clock() - self.attributor.window_s)

    def buffered(self, request_id: str) -> Impression | None:
        """An impression still waiting for its flush, if any."""
        return next((i for i in self._buffer if i.request_id == request_id), None)

    def recent(self, request_id: str) -> Impression | None:
        return self.attributor.get(request_id)

    def set_shown_buffered(self, request_id: str, shown: tuple[str, ...]) -> bool:
        """Record the displayed items on a still-buffered impression; False if not buffered."""
        for i, imp in enumerate(self._buffer):
            if imp.request_id == request_id:
                self._buffer[i] = dataclasses.replace(imp, shown=shown)
                self.attributor.replace(self._buffer[i])
                return True
        return False

    def note_shown(self, impression: Impression) -> None:
        """Keep the live attribution in step with a stored impression's displayed items."""
        if self.attributor.get(impression.request_id) is not None:
            self.attributor.replace(impression)

    def forget_user(self, user_id: str) -> None:
        """Drop the user's buffered and remembered impressions (erasure)."""
        self._buffer = collections.deque(i for i in self._buffer if i.user_id != user_id)
        self.attributor.forget_user(user_id)

    def observe(self, events: Iterable[Event]) -> list[Attributed]:
        """Attribute newly recorded events to the impressions served here; counts them."""
        out = []
        for event in events:
            got = self.attributor.attribute(event)
            if isinstance(got, Attributed):
                imp = self.attributor.get(got.request_id)
                variant = got.team or (imp.variant if imp is not None else "")
                metrics.ATTRIBUTED.labels(variant=variant, action=got.event_type).inc()
                out.append(got)
            elif isinstance(got, str):
                metrics.ATTRIBUTION_IGNORED.labels(reason=got).inc()
        return out

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_s)
            self._wake.clear()
            if not self._buffer:
                return  # idle: the next record() starts the task again
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered now, a batch at a time; on a failure, keep the rest
        (and the failed batch) for the next try."""
        async with self._flush_lock:
            while self._buffer:
                batch = [self._buffer.popleft()
                         for _ in range(min(self.batch_rows, len(self._buffer)))]
                try:
                    await self._store.record_many(batch)
                except asyncio.CancelledError:  # closing mid-write: the rows stay queued
                    self._buffer.extendleft(reversed(batch))
                    raise
                except Exception as exc:  # the store is away: keep the rows, try later
                    self.failures += 1
                    metrics.IMPRESSION_FLUSH_FAILURES.inc()
                    room = self.capacity - len(self._buffer)
                    keep = batch[:max(0, room)]
                    lost = len(batch) - len(keep)
                    self._buffer.extendleft(reversed(keep))
                    if lost:
                        self.dropped += lost
                        metrics.IMPRESSIONS_DROPPED.inc(lost)
                    _log.warning("impressions not written (%d buffered, kept for the next "
                                 "flush): %s", len(self._buffer), type(exc).__name__)
                    return
                self.written += len(batch)

    async def close(self) -> None:
        """Stop the background task after a last flush."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):  # closing: a failed last flush is counted
            await self.flush()
