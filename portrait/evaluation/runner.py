"""Offline replay: feed each user's events through a system in time order, rank the catalog.

Pure: numpy and the standard library only, no I/O.

Every system (Portrait and the baselines) implements one interface, :class:`System`: it opens a
:class:`Session` per user, the runner feeds the session the user's events *in stream order*
with :meth:`Session.observe`, and at each test point asks :meth:`Session.scores` for one score
per catalog item. The runner then ranks the **whole catalog** (no sampled negatives), after
excluding the items the user interacted with before the test point, and records the rank of
every target and the top of the list.

Portrait runs through the real domain code: :func:`portrait.fold.fold` builds the profile
and :func:`portrait.ranking.score_items` scores it, the scorer behind
:func:`portrait.ranking.recommend` (the runner's top-K equals ``recommend``'s output with the
history excluded; a unit test checks it).

No leakage, by construction and by assertion: a session only ever receives events that sort
strictly before the case's key (``stream_key(event) < case.key``); the runner checks every
event it feeds and raises :class:`LeakageError` otherwise. Popularity is time-respecting:
:class:`CaseContext` counts only training events with ``occurred_at <= case.horizon``.

Ties: items with equal scores are ordered by catalog row (a stable sort), both for the ranks
and for the top-K lists; a NaN score counts as ``-inf``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from portrait.config import ProfileConfig
from portrait.errors import PortraitError
from portrait.evaluation.metrics import (
    UNRANKED,
    catalog_coverage,
    mean_popularity_percentile,
    per_user_metrics,
    popularity_percentiles,
)
from portrait.evaluation.splits import Case, Split, stream_key
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent, RecordedEvent
from portrait.fold import fold
from portrait.items import ItemIndex
from portrait.ports import TextFeatures
from portrait.profile import ProfileState
from portrait.progress import Progress
from portrait.ranking import (
    AnnCatalog,
    RankingConfig,
    TagTable,
    ann_scores,
    popularity_scores,
    score_items,
)


class LeakageError(PortraitError):
    """An event at or after a test point was about to reach that test point's profile."""


# -- the interface every system implements -----------------------------------------------------


class CaseContext:
    """What a session may use besides its own events: the case and time-respecting popularity."""

    def __init__(self, case: Case, clock: PopularityClock, history: Sequence[str] = ()) -> None:
        self.case = case
        # the items the user interacted with before the case (the runner excludes them)
        self.history = tuple(history)
        self._clock = clock
        self._counts: np.ndarray | None = None
        self._popularity: np.ndarray | None = None

    @property
    def counts(self) -> np.ndarray:
        """Training interactions per catalog row with ``occurred_at <= case.horizon``."""
        if self._counts is None:
            self._counts = self._clock.counts_until(self.case.horizon)
        return self._counts

    def popularity(self) -> np.ndarray:
        """``popularity_scores(counts)``, the prior Portrait's ranker takes."""
        if self._popularity is None:
            self._popularity = popularity_scores(self.counts)
        return self._popularity

    def window_counts(self, seconds: float) -> np.ndarray:
        """Training interactions per row in ``(horizon - seconds, horizon]``."""
        return self._clock.counts_between(self.case.horizon - seconds, self.case.horizon)


class Session(Protocol):
    def observe(self, events: Sequence[Event]) -> None:
        """Events of this session's user, in stream order, each before the next test point."""
        ...

    def scores(self, ctx: CaseContext) -> np.ndarray:
        """One score per catalog row (higher is better)."""
        ...


class System(Protocol):
    name: str

    def session(self, user_id: str) -> Session: ...


# -- popularity over time ---------------------------------------------------------------------


class PopularityClock:
    """Item interaction counts of the training events up to a time, over catalog rows."""

    def __init__(self, train_events: Iterable[Event], row_of: Mapping[str, int], n_items: int):
        times: list[float] = []
        rows: list[int] = []
        for ev in train_events:
            if isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES:
                r = row_of.get(ev.item_id)
                if r is not None:
                    times.append(ev.occurred_at)
                    rows.append(r)
        order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
        self.times = np.asarray(times, dtype=np.float64)[order]
        self.rows = np.asarray(rows, dtype=np.int64)[order]
        self.n_items = n_items
        self._last: tuple[int, np.ndarray] | None = None

    def _count_upto(self, index: int) -> np.ndarray:
        # Incremental when queries move forward (the runner visits cases in horizon order).
        if self._last is not None and self._last[0] <= index:
            start, base = self._last
            counts = base + np.bincount(self.rows[start:index], minlength=self.n_items)
        else:
            counts = np.bincount(self.rows[:index], minlength=self.n_items)
        counts = counts.astype(np.float64)
        self._last = (index, counts)
        return counts.copy()

    def counts_until(self, horizon: float) -> np.ndarray:
        return self._count_upto(int(np.searchsorted(self.times, horizon, side="right")))

    def counts_between(self, start: float, end: float) -> np.ndarray:
        lo = int(np.searchsorted(self.times, start, side="right"))
        hi = int(np.searchsorted(self.times, end, side="right"))
        return np.bincount(self.rows[lo:hi], minlength=self.n_items).astype(np.float64)

    def total(self) -> np.ndarray:
        return np.bincount(self.rows, minlength=self.n_items).astype(np.float64)


# -- Portrait -------------------------------------------------------------------------------


class PortraitSession:
    """One user's profile, folded with the real :func:`portrait.fold.fold`."""

    def __init__(self, system: PortraitSystem, user_id: str) -> None:
        self.system = system
        self.state = ProfileState(user_id, system.items.text_dim)
        self._seq = 0

    def observe(self, events: Sequence[Event]) -> None:
        s = self.system
        start = self._seq
        self._seq += len(events)
        cache = s.state_cache
        key = (self.state.user_id, start, self._seq)
        if cache is not None and key in cache:
            self.state = cache[key].copy()
            return
        recs = [
            RecordedEvent(start + i + 1, start + i + 1, ev.occurred_at, ev)
            for i, ev in enumerate(events)
        ]
        fold(self.state, recs, s.profile, s.items, s.texts)
        if cache is not None:
            cache[key] = self.state.copy()

    def scores(self, ctx: CaseContext) -> np.ndarray:
        s = self.system
        pop = ctx.popularity() if s.ranking.popularity_weight else None
        if s.ann is not None:  # the approximate path: candidates first, as the service ranks
            allowed = np.ones(len(s.items), dtype=bool)
            allowed[[r for r in map(s.items.row, ctx.history) if r is not None]] = False
            return ann_scores(self.state, s.profile, s.ranking, s.items, s.tag_table,
                              s.ann.with_popularity(pop), allowed, pop)
        return score_items(self.state, s.profile, s.ranking, s.items, s.tag_table, pop)


@dataclass
class PortraitSystem:
    """Portrait's profile fold and ranker under one configuration and item space.

    ``texts`` hold the text encoder's vectors as they are (``items.text_dim`` wide): the
    profile composes them into the text part of ``items``.
    """

    name: str
    profile: ProfileConfig
    ranking: RankingConfig
    items: ItemIndex
    tag_table: TagTable
    texts: Mapping[str, TextFeatures] = field(default_factory=dict)
    # Folded states by (user, events before, events after), for tuning runs that change only
    # the ranking blend: valid for ONE (profile config, item matrix, split) combination.
    state_cache: dict[tuple[str, int, int], ProfileState] | None = None
    # Rank through this approximate index (:func:`portrait.ranking.ann_scores`) instead of
    # scoring the catalog: the evaluation's ``--ann``.
    ann: AnnCatalog | None = None

    def session(self, user_id: str) -> PortraitSession:
        return PortraitSession(self, user_id)


# -- results --------------------------------------------------------------------------------


@dataclass
class SystemRun:
    """One system's outcome on one split: target ranks and top lists per case."""

    name: str
    ranks: list[tuple[float, ...]]
    top: np.ndarray  # (n_cases, top_k) catalog rows, -1 where the list is shorter
    seconds: float = 0.0

    def metrics(self, ks: Sequence[int] = (5, 10, 20)) -> dict[str, np.ndarray]:
        return per_user_metrics(self.ranks, ks)


@dataclass
class RunResult:
    split: str
    phase: str
    cases: tuple[Case, ...]
    history_lengths: np.ndarray  # distinct items visible per case
    n_items: int
    train_counts: np.ndarray  # all training interactions per item (for popularity percentiles)
    systems: dict[str, SystemRun]
    seconds: float
    targets_outside_catalog: int = 0

    def metrics(self, ks: Sequence[int] = (5, 10, 20)) -> dict[str, dict[str, np.ndarray]]:
        return {name: run.metrics(ks) for name, run in self.systems.items()}

    def list_metrics(self, ks: Sequence[int] = (5, 10, 20)) -> dict[str, dict[str, float]]:
        """Catalog coverage and mean popularity percentile of the top K, per system."""
        pct = popularity_percentiles(self.train_counts)
        out: dict[str, dict[str, float]] = {}
        for name, run in self.systems.items():
            lists = [[r for r in row if r >= 0] for row in run.top]
            entry = {}
            for k in ks:
                entry[f"Coverage@{k}"] = catalog_coverage(lists, self.n_items, k)
                entry[f"PopPct@{k}"] = mean_popularity_percentile(lists, pct, k)
            out[name] = entry
        return out


def rank_targets(
    scores: np.ndarray, allowed: np.ndarray, target_rows: Sequence[int]
) -> list[float]:
    """0-based rank of each target among allowed items; ties ordered by catalog row."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    masked = np.where(allowed, s, -np.inf)
    out = []
    for t in target_rows:
        st = s[t]
        ahead = int(np.count_nonzero(masked > st))
        ahead += int(np.count_nonzero(allowed[:t] & (s[:t] == st)))
        out.append(float(ahead))
    return out


def top_rows(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best allowed rows, best first, ties by row; padded with -1."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    masked = np.where(allowed, s, -np.inf)
    n_allowed = int(allowed.sum())
    k_eff = min(k, n_allowed, masked.size)
    out = np.full(k, -1, dtype=np.int64)
    if k_eff == 0:
        return out
    if k_eff < masked.size:
        head = np.argpartition(-masked, k_eff - 1)[:k_eff]
    else:
        head = np.arange(masked.size)
    # the partition may cut through a tie: widen the head to every item tied with its last one
    cutoff = masked[head].min()
    head = np.flatnonzero(masked >= cutoff) if np.isfinite(cutoff) else head
    head = head[np.lexsort((head, -masked[head]))][:k_eff]
    out[: head.size] = head
    return out


def run(
    split: Split,
    systems: Sequence[System],
    item_ids: Sequence[str],
    *,
    top_k: int = 20,
    progress: Progress | None = None,
) -> RunResult:
    """Replay ``split`` through every system and rank the full catalog at each case.

    Cases are visited in horizon order (so popularity counts advance incrementally); results
    are stored in ``split.cases`` order, so two runs of one split pair user by user.
    """
    t_start = time.perf_counter()
    row_of = {item: i for i, item in enumerate(item_ids)}
    n_items = len(item_ids)
    clock = PopularityClock(split.train_events, row_of, n_items)
    n_cases = len(split.cases)
    ranks: dict[str, list[tuple[float, ...]]] = {s.name: [()] * n_cases for s in systems}
    tops = {s.name: np.full((n_cases, top_k), -1, dtype=np.int64) for s in systems}
    seconds = {s.name: 0.0 for s in systems}
    if len(ranks) != len(systems):
        raise ValueError("system names must be unique")
    history_lengths = np.zeros(n_cases, dtype=np.int64)
    outside = 0

    # A user's sessions live from their first case to their last.
    last_case_of: dict[str, int] = {}
    order = sorted(range(n_cases), key=lambda i: (split.cases[i].horizon, split.cases[i].user_id))
    for pos, i in enumerate(order):
        last_case_of[split.cases[i].user_id] = pos
    sessions: dict[str, tuple[int, list[Session]]] = {}

    for pos, i in enumerate(order):
        case = split.cases[i]
        stream = split.streams[case.user_id]
        fed, user_sessions = sessions.get(case.user_id) or (0, None)
        if user_sessions is None:
            user_sessions = []
            for s in systems:
                t0 = time.perf_counter()
                user_sessions.append(s.session(case.user_id))
                seconds[s.name] += time.perf_counter() - t0
        new = stream[fed : case.cutoff]
        for ev in new:
            if not stream_key(ev) < case.key:
                raise LeakageError(
                    f"event {ev.event_id!r} at {ev.occurred_at} would reach the profile of "
                    f"{case.user_id!r} for the test point at {case.key}"
                )
        if new:
            for s, sess in zip(systems, user_sessions, strict=True):
                t0 = time.perf_counter()
                sess.observe(new)
                seconds[s.name] += time.perf_counter() - t0
        sessions[case.user_id] = (case.cutoff, user_sessions)

        history = split.history_items(case)
        history_lengths[i] = len(history)
        allowed = np.ones(n_items, dtype=bool)
        targets = set(case.targets)
        for item in history:
            r = row_of.get(item)
            if r is not None and item not in targets:
                allowed[r] = False
        target_rows = [row_of.get(t) for t in case.targets]
        outside += sum(1 for r in target_rows if r is None)
        known = [r for r in target_rows if r is not None]
        ctx = CaseContext(case, clock, history)
        for s, sess in zip(systems, user_sessions, strict=True):
            t0 = time.perf_counter()
            sc = np.asarray(sess.scores(ctx), dtype=np.float64)
            if sc.shape != (n_items,):
                raise ValueError(f"{s.name} returned {sc.shape} scores for {n_items} items")
            ranked = rank_targets(sc, allowed, known)
            ranked += [UNRANKED] * (len(target_rows) - len(known))
            ranks[s.name][i] = tuple(ranked)
            tops[s.name][i] = top_rows(sc, allowed, top_k)
            seconds[s.name] += time.perf_counter() - t0
        if last_case_of[case.user_id] == pos:
            del sessions[case.user_id]
        if progress is not None:
            progress(pos + 1, n_cases)

    return RunResult(
        split=split.name,
        phase=split.phase,
        cases=split.cases,
        history_lengths=history_lengths,
        n_items=n_items,
        train_counts=clock.total(),
        systems={
            s.name: SystemRun(s.name, ranks[s.name], tops[s.name], seconds[s.name]) for s in systems
        },
        seconds=time.perf_counter() - t_start,
        targets_outside_catalog=outside,
    )
