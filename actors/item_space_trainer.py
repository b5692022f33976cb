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
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from actors.ranker_trainer import RankerOutcome, RankerTrainer
from portrait.collaborative import pairs_interactions, train_item_space
from portrait.errors import NotEnoughInteractions
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.item_space import CollabSettings, ItemSpace
from portrait.ports import EventLog, ItemSpaceStore
from portrait.progress import Progress

_log = logging.getLogger(__name__)
READ_PAGE = 20_000


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
        events: EventLog,
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
        self, progress: Progress | None = None, *, fresh: bool = True
    ) -> ItemSpace | None:
        """Train and save a new space; None if skipped or failed (the previous one stays).

        While a retrain runs, a ``fresh`` call (an operator's, a served evaluation's: it
        wants every event recorded so far) waits for it and then for one follow-up run that
        all such callers share; a call with ``fresh=False`` (the background trigger) just
        shares the running one.
        """
        running = self._current is not None and not self._current.done()
        if not running:
            self._current = asyncio.ensure_future(self._run(progress))
            return await asyncio.shield(self._current)
        if not fresh:
            assert self._current is not None
            return await asyncio.shield(self._current)
        if self._follow_up is None or self._follow_up.done():
            self._follow_up = asyncio.ensure_future(self._after_current(progress))
        return await asyncio.shield(self._follow_up)

    async def _after_current(self, progress: Progress | None) -> ItemSpace | None:
        assert self._current is not None
        await asyncio.gather(self._current, return_exceptions=True)
        self._current = asyncio.ensure_future(self._run(progress))
        return await self._current

    async def _run(self, progress: Progress | None) -> ItemSpace | None:
        started = time.perf_counter()
        self.stats.running = True
        counted = self.stats.new_events
        try:
            space, ranker = await self._train(progress)
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
        self, progress: Progress | None
    ) -> tuple[ItemSpace, RankerOutcome | None]:
        users: dict[str, int] = {}
        items: dict[str, int] = {}
        us: list[int] = []
        rows: list[int] = []
        streams: dict[str, list[Event]] = {}  # every event, by user: the ranker's training
        keep = self._ranker is not None
        after = events = 0
        while page := await self._events.read_all(after_position=after, limit=READ_PAGE):
            for rec in page:
                e = rec.event
                if keep:
                    streams.setdefault(e.user_id, []).append(e)
                if isinstance(e, ItemEvent) and e.TYPE in POSITIVE_ITEM_TYPES:
                    us.append(users.setdefault(e.user_id, len(users)))
                    rows.append(items.setdefault(e.item_id, len(items)))
                    events += 1
            after = page[-1].position
        pairs = pairs_interactions(tuple(users), us, rows, len(items))
        space = await asyncio.to_thread(
            train_item_space, pairs, list(items), self.settings,
            trained_through=after, events=events, progress=progress,
        )
        if self._ranker is None:
            return space, None
        outcome = await self._ranker.train(streams, space)
        return dataclasses.replace(space, ranker=outcome.ranker), outcome
