"""Group commit: appends from many users within a short window share one transaction.

A durable commit costs a WAL flush (about 0.5 ms here), so one commit per event caps a shard
at a few thousand events/s however fast the rest is. Callers :meth:`GroupCommitter.submit_many`
their users' batches and wait; a single flusher writes everything queued with
:meth:`EventLog.append_many` in one transaction. An idle committer flushes at once (a lone
event waits for nobody); requests that arrive while a transaction is in flight queue up and
share the next one, so batches grow exactly when load does. ``window_s`` optionally holds
the first request a little longer to gather more under steady load.
Each request is still all-or-nothing and gets its own result or error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from portrait.errors import PortraitError
from portrait.ports import AppendRequest, AppendResult, EventLog

_log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Pending:
    request: AppendRequest
    future: asyncio.Future[list[AppendResult]]


class GroupCommitter:
    """Batches concurrent appends into shared transactions."""

    def __init__(self, log: EventLog, *, window_s: float = 0.0, max_events: int = 2000) -> None:
        self._log = log
        self._window = window_s
        self._max_events = max_events
        self._queue: list[_Pending] = []
        self._queued_events = 0
        self._flushing_events = 0
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0  # transactions issued, for metrics and tests

    @property
    def pending_events(self) -> int:
        """Events submitted and not yet acknowledged: queued, or in the running transaction."""
        return self._queued_events + self._flushing_events

    async def submit_many(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[AppendResult] | Exception]:
        """Append each request's events; returns, once they are durable, per request its
        results or the exception that refused it (a failed transaction fails them all)."""
        loop = asyncio.get_running_loop()
        pending = [_Pending(r, loop.create_future()) for r in requests]
        self._queue.extend(pending)
        self._queued_events += sum(len(r.events) for r in requests)
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush_loop())
        if self._queued_events >= self._max_events:
            self._wakeup.set()
        # The futures are failed with Exceptions only (see _flush), never other BaseExceptions.
        done = await asyncio.gather(*(p.future for p in pending), return_exceptions=True)
        return [r if not isinstance(r, BaseException) else _as_exception(r) for r in done]

    async def _flush_loop(self) -> None:
        while self._queue:
            if self._window > 0:
                # Woken early when max_events is reached; otherwise the window runs out.
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self._window)
            else:
                await asyncio.sleep(0)  # let callers scheduled in this loop turn join in
            self._wakeup.clear()
            self._flushing_events = self._queued_events
            batch, self._queue, self._queued_events = self._queue, [], 0
            try:
                await self._flush(batch)
            finally:
                self._flushing_events = 0

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            outcomes = await self._log.append_many([p.request for p in batch])
        except BaseException as exc:  # the whole transaction failed: every caller learns why
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc if isinstance(exc, Exception) else RuntimeError(exc))
            if not isinstance(exc, Exception):
                raise
            return
        self.commits += 1
        for p, outcome in zip(batch, outcomes, strict=True):
            if p.future.done():
                continue
            if isinstance(outcome, PortraitError):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)


def _as_exception(err: BaseException) -> Exception:
    if isinstance(err, Exception):
        return err
    raise err  # a cancellation or exit: not an outcome to report
