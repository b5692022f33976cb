"""Hyper-parameter search on the validation split.

Pure: numpy and the standard library only, no I/O. The result is stored as a
:class:`portrait.tuned_config.TunedConfig` document (written by :mod:`offline`).

What is searched (:func:`search_space`): the three half-lives, the rating centre, the weight of
each event type (and text type) the data actually contains, the ranking blend (``short_mix``,
``tag_weight``, ``popularity_weight``, ``cold_start_events``) and ``alpha``, the text /
collaborative blend of the item vectors. The objective is mean NDCG@10 over the VALIDATION
cases; the test split is never looked at here.

Search (:func:`tune_portrait`), fixed budget and seed, deterministic:

1. the shipped defaults (``ProfileConfig()``, ``RankingConfig()``, ``alpha=DEFAULT_ALPHA``);
2. random search: ``random_share`` of the budget, parameters drawn independently (log-uniform
   for scales, uniform otherwise);
3. coordinate search around the best point: one parameter at a time, a step up and a step
   down (x/÷ ``factor`` for log parameters, +/- ``step`` of the range otherwise), keeping
   improvements; the step halves after a sweep without improvement; until the budget is spent.

Folded profiles depend only on the profile config and the item matrix, so trials that change
only the ranking blend reuse them (a small cache keyed by both).

Baselines get the same treatment on the same validation cases
(:func:`portrait.evaluation.baseline_tuning.tune_baselines`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from portrait.ann import AnnSettings, VectorIndex
from portrait.collaborative import combine
from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.evaluation.runner import PortraitSystem, RunResult, run
from portrait.evaluation.splits import Split
from portrait.events import Event, ItemEvent, ReviewWritten, SearchPerformed
from portrait.items import ItemIndex
from portrait.ports import TextFeatures
from portrait.profile import ProfileState
from portrait.progress import Progress
from portrait.ranking import AnnCatalog, RankingConfig, TagTable

DEFAULT_ALPHA = 0.5
OBJECTIVE = "NDCG@10"


# -- the Portrait parameters ---------------------------------------------------------------


@dataclass(frozen=True)
class PortraitParams:
    """One point of the search: how profiles fold, how they rank, how item vectors blend."""

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    alpha: float = DEFAULT_ALPHA

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_dict(),
            "ranking": dataclasses.asdict(self.ranking),
            "alpha": self.alpha,
        }


class PortraitFactory:
    """Builds Portrait systems over one catalog: item vectors per ``alpha``, one tag table."""

    def __init__(
        self,
        item_ids: Sequence[str],
        text_matrix: np.ndarray,
        collab_matrix: np.ndarray | None,
        tags: Sequence[Sequence[str]],
        texts: Mapping[str, TextFeatures] | None = None,
        model_id: str = "",
    ) -> None:
        self.item_ids = list(item_ids)
        self.text_matrix = text_matrix
        self.collab_matrix = collab_matrix
        self.tags = [tuple(t) for t in tags]
        self.texts = dict(texts or {})
        self.model_id = model_id
        self._items: dict[float, ItemIndex] = {}
        self._tag_table: TagTable | None = None
        # Rank through the approximate index (the service's path at scale) when set: one
        # index per item space, built on first use.
        self.ann: AnnSettings | None = None
        self._anns: dict[float, tuple[ItemIndex, AnnCatalog]] = {}

    def items(self, alpha: float) -> ItemIndex:
        alpha = float(alpha)
        if alpha not in self._items:
            if len(self._items) >= 4:
                self._items.pop(next(iter(self._items)))
            matrix = combine(self.text_matrix, self.collab_matrix, alpha)
            # Profiles compose their text-event vectors into the text part, [text, 0] like an
            # item without a collaborative vector (see combine): no padding of the features.
            self._items[alpha] = ItemIndex(
                self.item_ids, matrix, self.tags, self.model_id,
                text_dim=int(self.text_matrix.shape[1]),
                space_version="text" if self.collab_matrix is None else f"alpha={alpha!r}",
            )
        return self._items[alpha]

    @property
    def tag_table(self) -> TagTable:
        if self._tag_table is None:
            self._tag_table = TagTable(self.items(0.0))
        return self._tag_table

    def system(
        self, name: str, params: PortraitParams,
        state_cache: dict[tuple[str, int, int], ProfileState] | None = None,
    ) -> PortraitSystem:
        alpha = params.alpha if self.collab_matrix is not None else 0.0
        items = self.items(alpha)
        return PortraitSystem(
            name, params.profile, params.ranking, items, self.tag_table, self.texts, state_cache,
            ann=self.ann_for(alpha),
        )

    def ann_indexes(self) -> list[dict[str, float]] | None:
        """The approximate indexes the systems ranked through (None: exact ranking)."""
        if self.ann is None:
            return None
        return [
            {"alpha": alpha, "rows": len(ann.index),
             "bytes_per_item": ann.index.nbytes() / max(len(ann.index), 1)}
            for alpha, (_, ann) in self._anns.items()
        ]

    def ann_for(self, alpha: float) -> AnnCatalog | None:
        """The approximate index over :meth:`items` of ``alpha`` when :attr:`ann` says it
        serves, else None (the popularity is the session's, set per test point)."""
        items = self.items(alpha)
        if self.ann is None or not self.ann.serves(len(items)):
            return None
        cached = self._anns.get(float(alpha))
        if cached is None or cached[0] is not items:
            cached = (items, AnnCatalog(VectorIndex.build(items.matrix), self.tag_table, None,
                                        self.ann))
            self._anns[float(alpha)] = cached
        return cached[1]


# -- the search space ----------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str
    low: float
    high: float
    log: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.log:
            return float(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        return float(rng.uniform(self.low, self.high))

    def clip(self, value: float) -> float:
        return float(min(max(value, self.low), self.high))


def search_space(events: Iterable[Event], has_collab: bool = True) -> list[Param]:
    """The parameters worth searching for a dataset with these events."""
    item_types: set[str] = set()
    text_types: set[str] = set()
    rated = False
    for ev in events:
        if isinstance(ev, ItemEvent):
            item_types.add(ev.TYPE)
            if getattr(ev, "rating", None) is not None:
                rated = True
        if isinstance(ev, (ReviewWritten, SearchPerformed)):
            text_types.add(ev.TYPE)
    space = [
        Param("long_half_life_days", 1.0, 3650.0, log=True),
        Param("short_half_life_days", 1e-5, 30.0, log=True),
        Param("tag_half_life_days", 1.0, 3650.0, log=True),
        Param("short_mix", 0.0, 1.0),
        Param("tag_weight", 0.0, 1.0),
        Param("popularity_weight", 0.0, 5.0),
        Param("cold_start_events", 1.0, 1000.0, log=True),
    ]
    if rated:
        space.append(Param("rating_center", -5.0, 4.5))
    weighted = sorted(item_types - {"rating", "review", "dismiss"})
    # one signal type alone has no relative weight to tune (cosine ignores a common scale)
    if len(weighted) + (1 if rated else 0) + len(text_types) > 1:
        space += [Param(f"w:{t}", 0.0, 3.0) for t in weighted]
        if "dismiss" in item_types:
            space.append(Param("w:dismiss", -3.0, 0.0))
        if rated:
            space.append(Param("w:rating", 0.1, 3.0, log=True))
        space += [Param(f"tw:{t}", 0.0, 3.0) for t in sorted(text_types)]
    if has_collab:
        space.append(Param("alpha", 0.0, 1.0))
    return space


_RANKING_FIELDS = {"short_mix", "tag_weight", "popularity_weight", "cold_start_events"}
_PROFILE_FIELDS = {"long_half_life_days", "short_half_life_days", "tag_half_life_days",
                   "rating_center"}


def apply(base: PortraitParams, values: Mapping[str, float]) -> PortraitParams:
    """``base`` with the searched ``values`` set."""
    prof: dict[str, Any] = {}
    rank: dict[str, Any] = {}
    weights = dict(base.profile.event_weights)
    text_weights = dict(base.profile.text_weights)
    alpha = base.alpha
    for name, value in values.items():
        if name in _PROFILE_FIELDS:
            prof[name] = float(value)
        elif name in _RANKING_FIELDS:
            rank[name] = float(value)
        elif name.startswith("w:"):
            weights[name[2:]] = float(value)
        elif name.startswith("tw:"):
            text_weights[name[3:]] = float(value)
        elif name == "alpha":
            alpha = float(value)
        else:
            raise InvalidField(name, "unknown tuning parameter")
    profile = dataclasses.replace(
        base.profile, event_weights=weights, text_weights=text_weights, **prof
    )
    return PortraitParams(profile, dataclasses.replace(base.ranking, **rank), alpha)


def current_values(params: PortraitParams, space: Sequence[Param]) -> dict[str, float]:
    out = {}
    for p in space:
        if p.name in _PROFILE_FIELDS:
            v = getattr(params.profile, p.name)
        elif p.name in _RANKING_FIELDS:
            v = getattr(params.ranking, p.name)
        elif p.name.startswith("w:"):
            v = params.profile.event_weights.get(p.name[2:], 0.0)
        elif p.name.startswith("tw:"):
            v = params.profile.text_weights.get(p.name[3:], 0.0)
        else:
            v = params.alpha
        out[p.name] = float(v)
    return out


# -- running a trial -------------------------------------------------------------------------


@dataclass
class Trial:
    index: int
    phase: str  # "default", "random", "coordinate"
    values: dict[str, float]
    objective: float
    metrics: dict[str, float]


@dataclass
class TuningResult:
    best: PortraitParams
    best_values: dict[str, float]
    best_metrics: dict[str, float]
    trials: list[Trial]
    objective: str
    seed: int
    budget: int

    def summary(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "seed": self.seed,
            "budget": self.budget,
            "trials": len(self.trials),
            "best_trial": (
                max(self.trials, key=lambda t: t.objective).index if self.trials else None
            ),
            "best_values": self.best_values,
        }


def mean_metrics(result: RunResult, name: str) -> dict[str, float]:
    """One system's metrics at 5, 10 and 20, averaged over the run's cases."""
    return {k: float(v.mean()) for k, v in result.systems[name].metrics((5, 10, 20)).items()}


class _Evaluator:
    def __init__(self, split: Split, factory: PortraitFactory, objective: str) -> None:
        self.split = split
        self.factory = factory
        self.objective = objective
        self._caches: dict[tuple[str, float], dict[tuple[str, int, int], ProfileState]] = {}

    def __call__(self, params: PortraitParams) -> dict[str, float]:
        key = (params.profile.config_hash(), params.alpha)
        cache = self._caches.get(key)
        if cache is None:
            if len(self._caches) >= 2:
                self._caches.pop(next(iter(self._caches)))
            cache = self._caches[key] = {}
        system = self.factory.system("portrait", params, state_cache=cache)
        result = run(self.split, [system], self.factory.item_ids)
        return mean_metrics(result, "portrait")


def tune_portrait(
    validation: Split,
    factory: PortraitFactory,
    *,
    budget: int = 60,
    seed: int = 0,
    random_share: float = 0.5,
    base: PortraitParams | None = None,
    space: Sequence[Param] | None = None,
    objective: str = OBJECTIVE,
    progress: Progress | None = None,
) -> TuningResult:
    """Search Portrait's parameters on ``validation`` (see the module docstring)."""
    if budget < 1:
        raise ValueError("budget must be at least 1")
    base = base or PortraitParams()
    space = list(space if space is not None else search_space(
        validation.train_events, factory.collab_matrix is not None
    ))
    rng = np.random.default_rng(seed)
    evaluate = _Evaluator(validation, factory, objective)
    trials: list[Trial] = []
    best_values = current_values(base, space)
    best_obj = -math.inf
    best_metrics: dict[str, float] = {}

    def attempt(values: dict[str, float], phase: str) -> float:
        nonlocal best_values, best_obj, best_metrics
        metrics = evaluate(apply(base, values))
        obj = metrics[objective]
        trials.append(Trial(len(trials), phase, dict(values), obj, metrics))
        if obj > best_obj:
            best_obj, best_values, best_metrics = obj, dict(values), metrics
        if progress is not None:
            progress(len(trials), budget, last=obj, best=best_obj)
        return obj

    attempt(dict(best_values), "default")
    n_random = max(0, min(budget - 1, int(round(budget * random_share))))
    for _ in range(n_random):
        attempt({p.name: p.sample(rng) for p in space}, "random")

    factor = 3.0
    step = 0.25
    while len(trials) < budget and space:
        improved = False
        for p in space:
            if len(trials) >= budget:
                break
            here = best_values[p.name]
            if p.log:
                candidates = [here * factor, here / factor]
            else:
                width = (p.high - p.low) * step
                candidates = [here + width, here - width]
            for v in candidates:
                if len(trials) >= budget:
                    break
                v = p.clip(v)
                if math.isclose(v, here):
                    continue
                before = best_obj
                attempt({**best_values, p.name: v}, "coordinate")
                if best_obj > before:
                    improved = True
                    break
        if not improved:
            factor = math.sqrt(factor)
            step /= 2.0
            if step < 1e-3:
                break
    return TuningResult(
        best=apply(base, best_values),
        best_values=best_values,
        best_metrics=best_metrics,
        trials=trials,
        objective=objective,
        seed=seed,
        budget=budget,
    )
