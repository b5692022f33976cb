"""Retraining the collaborative item space from the event log (no Ray in here).

:class:`ItemSpaceTrainer` reads the log's positive item events, trains with
:func:`portrait.collaborative.train_item_space` (the evaluation's functions) off the event
loop, and saves the space whole; the caller publishes it. Triggers: enough new events, or
new events and enough time since the last retrain. Concurrent retrains coalesce: a call while
one runs shares its result. A failure keeps the previous space and is counted with its reason;
too little data is a skip, not a failure, and the service ranks with text vectors meanwhile.

With a :class:`~actors.ranker_trainer.RankerTrainer`, the same read of the log also trains the
learned ranker in the new space, saved in the same row (one transaction): a ranker that is
refused or fails leaves the space without one (the blend serves), never loses the space.

The read streams: a page of the log at a time, each kept as distinct (user, item) pairs
(:class:`PairReader`), so memory grows with the distinct pairs (8 bytes each) and the ids, not
with the events read; only a ranker needs the events themselves.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from actors.ranker_trainer import RankerOutcome, RankerTrainer
from portrait.collaborative import (
    Interactions,
    StageProgress,
    stage_progress,
    train_item_space,
)
from portrait.errors import NotEnoughInteractions
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent, RecordedEvent
from portrait.item_space import CollabSettings, ItemSpace
from portrait.ports import ItemSpaceStore
from portrait.progress import Progress

_log = logging.getLogger(__name__)
READ_PAGE = 20_000
COMPACT_PAIRS = 4_000_000  # pending pairs merged into the distinct ones (~100 MB of scratch)


class LogReader(Protocol):
    """What a retrain needs of the :class:`~portrait.ports.EventLog`: its paged read."""

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        ...


class PairReader:
    """Distinct (user, item) pairs of the positive item events fed to it, page by page.

    Ids are numbered in order of first appearance; pairs wait in a page-sized buffer and are
    merged into one sorted array of distinct ``user << 32 | item`` codes every
    ``COMPACT_PAIRS``, so memory is that array, the pending buffer and the id tables.
    """

    def __init__(self) -> None:
        self.users: dict[str, int] = {}
        self.items: dict[str, int] = {}
        self.events = 0
        self._codes = np.zeros(0, dtype=np.int64)
        self._pending: list[np.ndarray] = []
        self._pending_size = 0

    def add(self, page: Sequence[RecordedEvent]) -> None:
        users, items = self.users, self.items
        codes: list[int] = []
        for rec in page:
            e = rec.event
            if isinstance(e, ItemEvent) and e.TYPE in POSITIVE_ITEM_TYPES:
                u = users.setdefault(e.user_id, len(users))
                codes.append(u << 32 | items.setdefault(e.item_id, len(items)))
        self.events += len(codes)
        self._pending.append(np.asarray(codes, dtype=np.int64))
        self._pending_size += len(codes)
        if self._pending_size >= COMPACT_PAIRS:
            self._compact()

    def _compact(self) -> None:
        self._codes = np.unique(np.concatenate([self._codes, *self._pending]))
        self._pending, self._pending_size = [], 0

    def interactions(self) -> Interactions:
        """What was read, as the trainer's :class:`Interactions` (rows: :attr:`items`)."""
        self._compact()
        return Interactions(tuple(self.users), self._codes >> 32,
                            self._codes & 0xFFFF_FFFF, len(self.items))


@dataclass
class RetrainStats:
    """What the service reports about retraining (``GET /v1/item-space``, ``/metrics``)."""

    version: int = 0
    retrains: int = 0
    failures: int = 0
    skipped: int = 0
    last_error: str | None = None
    last_seconds: float = 0.0
    last_events: int = 0
    last_items: int = 0
    trained_through: int = 0
    new_events: int = 0
    running: bool = False
    # The learned ranker of the current version: trained (its figures), or why not.
    ranker_trained: bool = False
    ranker_skipped_reason: str | None = None
    ranker_metrics: dict[str, float] = field(default_factory=dict)


class ItemSpaceTrainer:
    """Trains and saves item spaces; see the module docstring.

    Args:
        events: the log to read.
        spaces: where spaces are saved (versions assigned there).
        settings: the collaborative model's settings.
        min_new_events: new events that make a retrain due.
        max_age_s: with any new events, a retrain is due this long after the last one.
        clock: monotonic seconds (tests pass their own).
        ranker: trains the learned ranker with each space; None: no ranker (the blend).
    """

    def __init__(
        self,
        events: LogReader,
        spaces: ItemSpaceStore,
        settings: CollabSettings,
        *,
        min_new_events: int = 10_000,
        max_age_s: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        ranker: RankerTrainer | None = None,
    ) -> None:
        self._events = events
        self._spaces = spaces
        self.settings = settings
        self._min_new = min_new_events
        self._max_age = max_age_s
        self._clock = clock
        self._ranker = ranker
        self._last_run = clock()
        self._current: asyncio.Future[ItemSpace | None] | None = None
        self._follow_up: asyncio.Future[ItemSpace | None] | None = None
        self.stats = RetrainStats()

    def note_events(self, count: int) -> None:
        self.stats.new_events += count

    def due(self) -> bool:
        new = self.stats.new_events
        age = self._clock() - self._last_run
        return new >= self._min_new or (new > 0 and age >= self._max_age)

    async def load_latest(self) -> ItemSpace | None:
        """The stored space (after a restart), its version recorded in the stats."""
        space = await self._spaces.latest()
        if space is not None:
            self.stats.version = space.version
            self.stats.trained_through = space.trained_through
            self.stats.ranker_trained = space.ranker is not None
        return space

    async def retrain(
        self, progress: Progress | None = None, *, fresh: bool = True,
        stages: StageProgress | None = None,
    ) -> ItemSpace | None:
        """Train and save a new space; None if skipped or failed (the previous one stays).

        ``progress`` follows the co-occurrence blocks; ``stages``, when given, every stage by
        name (``read log``, ``co-occurrence``, ``eigenvectors``, then ``ranker`` when one
        trains): :func:`portrait.progress.stage_bars` draws a bar for each.

        While a retrain runs, a ``fresh`` call (an operator's, a served evaluation's: it
        wants every event recorded so far) waits for it and then for one follow-up run that
        all such callers share; a call with ``fresh=False`` (the background trigger) just
        shares the running one.
        """
        running = self._current is not None and not self._current.done()
        if not running:
            self._current = asyncio.ensure_future(self._run(progress, stages))
            return await asyncio.shield(self._current)
        if not fresh:
            assert self._current is not None
            return await asyncio.shield(self._current)
        if self._follow_up is None or self._follow_up.done():
            self._follow_up = asyncio.ensure_future(self._after_current(progress, stages))
        return await asyncio.shield(self._follow_up)

    async def _after_current(
        self, progress: Progress | None, stages: StageProgress | None
    ) -> ItemSpace | None:
        assert self._current is not None
        await asyncio.gather(self._current, return_exceptions=True)
        self._current = asyncio.ensure_future(self._run(progress, stages))
        return await self._current

    async def _run(
        self, progress: Progress | None, stages: StageProgress | None = None
    ) -> ItemSpace | None:
        started = time.perf_counter()
        self.stats.running = True
        counted = self.stats.new_events
        try:
            space, ranker = await self._train(progress, stages)
            space = await self._spaces.save(space)
        except NotEnoughInteractions as exc:
            self.stats.skipped += 1
            self.stats.last_error = str(exc)
            if self._ranker is not None:  # it is trained with the space: say so, not nothing
                self.stats.ranker_skipped_reason = f"no item space was trained ({exc})"
            _log.warning("item-space retrain skipped: %s", exc)
            return None
        except Exception as exc:  # the service keeps its previous space; say why
            self.stats.failures += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:500]
            _log.exception("item-space retrain failed; keeping version %d", self.stats.version)
            return None
        finally:
            self.stats.running = False
            self._last_run = self._clock()
        self.stats.new_events = max(0, self.stats.new_events - counted)
        self.stats.retrains += 1
        self.stats.version = space.version
        self.stats.last_error = None
        self.stats.last_seconds = time.perf_counter() - started
        self.stats.last_events = space.events
        self.stats.last_items = len(space.item_ids)
        self.stats.trained_through = space.trained_through
        self.stats.ranker_trained = space.ranker is not None
        if ranker is not None:
            self.stats.ranker_skipped_reason = ranker.skipped_reason
            self.stats.ranker_metrics = ranker.metrics
        _log.info("item space %d: %d items from %d events in %.1fs", space.version,
                  len(space.item_ids), space.events, self.stats.last_seconds)
        return space

    async def _train(
        self, progress: Progress | None, stages: StageProgress | None
    ) -> tuple[ItemSpace, RankerOutcome | None]:
        reader = PairReader()
        streams: dict[str, list[Event]] = {}  # every event, by user: the ranker's training
        keep = self._ranker is not None
        reading = stage_progress(stages, "read log")
        # Positions count the log's events, so the last retrain's position and the events
        # noted since estimate where the read ends (the bar's total grows if it is passed).
        expected = self.stats.trained_through + self.stats.new_events
        after = 0
        while page := await self._events.read_all(after_position=after, limit=READ_PAGE):
            if keep:
                for rec in page:
                    streams.setdefault(rec.event.user_id, []).append(rec.event)
            reader.add(page)
            after = page[-1].position
            if reading is not None:
                reading(after, max(after, expected))
        if reading is not None:
            reading(after, after)
        space = await asyncio.to_thread(
            train_item_space, reader.interactions(), list(reader.items), self.settings,
            trained_through=after, events=reader.events, progress=progress, stages=stages,
        )
        if self._ranker is None:
            return space, None
        outcome = await self._ranker.train(streams, space, stage_progress(stages, "ranker"))
        return dataclasses.replace(space, ranker=outcome.ranker), outcome
