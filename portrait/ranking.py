"""Scoring the catalog against a profile: the one ranking code path, online and offline.

``score = cos(item, blend(long, short)) + tag_weight * tag_affinity + pop_weight(n) * popularity``

* ``blend`` mixes the normalised long- and short-term vectors (``short_mix``).
* ``tag_affinity`` sums the user's normalised tag weights over the item's tags, divided by the
  square root of the item's tag count (more matching tags count, long tag lists do not).
* the popularity prior fades as the user's history grows:
  ``pop_weight(n) = popularity_weight * cold_start_events / (cold_start_events + n)``, so a
  cold user gets popular items and an established one gets personal ones.

Excluded items (purchased, dismissed, rated... per :class:`ProfileConfig.exclude_types`) are
dropped, optional tag filters keep only items carrying one of the tags, and maximal marginal
relevance re-ranks the head of the list when ``diversity > 0``. Each result carries the reasons
that drove it: the recent items it resembles and the interests it matches.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.items import ItemIndex
from portrait.profile import ProfileState


@dataclass(frozen=True)
class RankingConfig:
    """Blend weights of the scorer (tuned by evaluation; see the evaluation tools)."""

    short_mix: float = 0.3
    tag_weight: float = 0.1
    popularity_weight: float = 0.3
    cold_start_events: float = 10.0
    mmr_pool: int = 200

    def __post_init__(self) -> None:
        if not 0.0 <= self.short_mix <= 1.0:
            raise InvalidField("short_mix", "must be between 0 and 1")
        if self.cold_start_events <= 0:
            raise InvalidField("cold_start_events", "must be positive")
        if self.mmr_pool < 1:
            raise InvalidField("mmr_pool", "must be at least 1")


@dataclass(frozen=True, slots=True)
class Reason:
    """Why an item was recommended: a similar recent item, a matching interest, popularity."""

    kind: str  # "similar_to", "interest", "popular"
    value: str
    weight: float


@dataclass(frozen=True, slots=True)
class Recommendation:
    item_id: str
    score: float
    reasons: tuple[Reason, ...] = field(default=())


class TagTable:
    """Sparse item x tag incidence of an :class:`ItemIndex`, built once per catalog version."""

    def __init__(self, items: ItemIndex) -> None:
        names: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        for row, tags in enumerate(items.all_tags()):
            for tag in tags:
                rows.append(row)
                cols.append(names.setdefault(tag, len(names)))
        self.names = names
        self.rows = np.asarray(rows, dtype=np.int64)
        self.cols = np.asarray(cols, dtype=np.int64)
        counts = np.bincount(self.rows, minlength=len(items)) if rows else np.zeros(len(items))
        self._per_item = np.sqrt(np.maximum(counts, 1)).astype(np.float32)
        self._counts = np.asarray(counts, dtype=np.float32)
        self.n_items = len(items)

    def per_item_counts(self) -> np.ndarray:
        """How many tags each item carries."""
        return self._counts

    def affinity(self, tag_weights: dict[str, float]) -> np.ndarray:
        """Per item: the user's tag weights (scaled to [-1, 1]) summed over the item's tags,
        divided by sqrt(number of tags)."""
        if not tag_weights or self.rows.size == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        scale = max(abs(w) for w in tag_weights.values()) or 1.0
        user = np.zeros(len(self.names), dtype=np.float32)
        for tag, w in tag_weights.items():
            col = self.names.get(tag)
            if col is not None:
                user[col] = w / scale
        summed = np.bincount(self.rows, weights=user[self.cols], minlength=self.n_items)
        result: np.ndarray = (summed / self._per_item).astype(np.float32)
        return result

    def mask(self, tags: Collection[str]) -> np.ndarray:
        """Items carrying at least one of ``tags``."""
        wanted = np.zeros(len(self.names), dtype=bool)
        for tag in tags:
            col = self.names.get(tag)
            if col is not None:
                wanted[col] = True
        out = np.zeros(self.n_items, dtype=bool)
        out[self.rows[wanted[self.cols]]] = True
        return out

    def extended(self, tags: Sequence[Sequence[str]]) -> TagTable:
        """This table with rows appended for ``tags`` (one entry per new item, the rows of an
        :meth:`ItemIndex.extended` delta): costs the delta's tags, not the catalog's."""
        grown: TagTable = object.__new__(TagTable)
        names = dict(self.names)
        rows: list[int] = []
        cols: list[int] = []
        for i, item_tags in enumerate(tags):
            for tag in item_tags:
                rows.append(self.n_items + i)
                cols.append(names.setdefault(tag, len(names)))
        grown.names = names
        grown.rows = np.concatenate([self.rows, np.asarray(rows, dtype=np.int64)])
        grown.cols = np.concatenate([self.cols, np.asarray(cols, dtype=np.int64)])
        counts = np.bincount(np.asarray(rows, dtype=np.int64) - self.n_items,
                             minlength=len(tags)).astype(np.float32) if rows else np.zeros(
                                 len(tags), np.float32)
        grown._counts = np.concatenate([self._counts, counts])
        grown._per_item = np.concatenate(
            [self._per_item, np.sqrt(np.maximum(counts, 1)).astype(np.float32)])
        grown.n_items = self.n_items + len(tags)
        return grown


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def profile_vector(
    state: ProfileState, config: ProfileConfig, ranking: RankingConfig, items: ItemIndex
) -> np.ndarray:
    """The query vector in ``items``' space: normalised long and short vectors, mixed, float32."""
    long, short = state.vectors(config, items)  # one composition for both
    v = (1 - ranking.short_mix) * _unit(long) + ranking.short_mix * _unit(short)
    return v.astype(np.float32)


def score_items(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    items: ItemIndex,
    tag_table: TagTable,
    popularity: np.ndarray | None = None,
) -> np.ndarray:
    """A score for every item in ``items`` (no exclusions, no filters)."""
    scores = items.column_major() @ profile_vector(state, config, ranking, items)
    if ranking.tag_weight:
        scores += ranking.tag_weight * tag_table.affinity(state.tag_weights(config))
    if popularity is not None and ranking.popularity_weight:
        fade = ranking.cold_start_events / (ranking.cold_start_events + state.event_count)
        scores += ranking.popularity_weight * fade * popularity
    result: np.ndarray = scores
    return result


def _mmr(
    candidates: np.ndarray, scores: np.ndarray, matrix: np.ndarray, k: int, lam: float
) -> list[int]:
    """Greedy maximal marginal relevance over ``candidates`` (row indices)."""
    chosen: list[int] = []
    vecs = matrix[candidates]
    max_sim = np.full(len(candidates), -np.inf)
    available = np.ones(len(candidates), dtype=bool)
    rel = scores[candidates]
    for _ in range(min(k, len(candidates))):
        penalty = np.where(np.isfinite(max_sim), max_sim, 0.0)
        mmr = np.where(available, (1 - lam) * rel - lam * penalty, -np.inf)
        best = int(np.argmax(mmr))
        chosen.append(int(candidates[best]))
        available[best] = False
        max_sim = np.maximum(max_sim, vecs @ vecs[best])
    return chosen


def _most_similar(
    rows: np.ndarray, recent_ids: list[str], recent_rows: np.ndarray, items: ItemIndex, n: int = 2
) -> list[list[tuple[float, str]]]:
    """Per result row: its ``n`` most similar recent items other than itself with a positive
    similarity, as (similarity, item id), highest first (ties: the larger id first). One
    matrix product and one sort for all rows, not a Python loop over every pair."""
    if not recent_ids or rows.size == 0:
        return [[] for _ in range(rows.size)]
    sims = items.matrix[rows] @ items.matrix[recent_rows].T
    masked = np.where((recent_rows[None, :] != rows[:, None]) & (sims > 0), sims, -np.inf)
    id_rank = np.argsort(np.argsort(np.asarray(recent_ids, dtype=object)))  # string order
    order = np.lexsort((np.broadcast_to(id_rank, masked.shape), masked), axis=-1)
    best = order[:, ::-1][:, :n]
    return [
        [(float(masked[i, j]), recent_ids[j]) for j in best[i] if np.isfinite(masked[i, j])]
        for i in range(rows.size)
    ]


def explain(
    rows: Sequence[int],
    state: ProfileState,
    config: ProfileConfig,
    items: ItemIndex,
    popular: Sequence[float],
    max_reasons: int = 3,
) -> list[tuple[Reason, ...]]:
    """Per item row: the recent items it resembles and the interests it matches (at most two
    of each, strongest first), and popularity where ``popular`` moved its score noticeably."""
    # The user's recent items (newest first, each once, dismissed ones not offered as a
    # reason), compared with every result row in one matrix product.
    recent: dict[str, int] = {}
    dismissed: set[str] = set()
    for _, _, item_id, typ in reversed(state.recent):
        r = items.row(item_id)
        if r is None or item_id in recent or item_id in dismissed:
            continue
        if typ == "dismiss":
            dismissed.add(item_id)
        else:
            recent[item_id] = r
    recent_ids = list(recent)
    recent_rows = np.fromiter(recent.values(), dtype=np.int64, count=len(recent))
    top_similar = _most_similar(np.asarray(rows, dtype=np.int64), recent_ids, recent_rows, items)
    tag_w = state.tag_weights(config)
    out = []
    for i, row in enumerate(rows):
        reasons: list[Reason] = [
            Reason("similar_to", item_id, round(s, 4)) for s, item_id in top_similar[i]
        ]
        liked = sorted(
            ((tag_w[t], t) for t in items.tags(row) if tag_w.get(t, 0.0) > 0), reverse=True
        )
        reasons += [Reason("interest", t, round(w, 4)) for w, t in liked[:2]]
        if popular[i] > 0.05:  # only worth saying when it moved the score noticeably
            reasons.append(Reason("popular", "", round(popular[i], 4)))
        out.append(tuple(reasons[:max_reasons]))
    return out


def check_request(k: int, diversity: float) -> None:
    """A recommendation request's own arguments, refused naming the field."""
    if k < 1:
        raise InvalidField("k", "must be at least 1")
    if not 0.0 <= diversity <= 1.0:
        raise InvalidField("diversity", "must be between 0 and 1")


def allowed_rows(
    state: ProfileState,
    items: ItemIndex,
    tag_table: TagTable,
    tags: Sequence[str] = (),
    exclude: Collection[str] = (),
) -> np.ndarray:
    """Rows a recommendation may show: carrying one of ``tags`` (when given), neither
    excluded by the profile nor in ``exclude``, nor superseded (:attr:`ItemIndex.alive`).
    Both rankers filter through this."""
    allowed = tag_table.mask(tags) if tags else np.ones(len(items), dtype=bool)
    if items.alive is not None:  # rows superseded by a newer version of their item
        allowed &= items.alive
    for item_id in (*state.excluded, *exclude):
        r = items.row(item_id)
        if r is not None:
            allowed[r] = False
    return allowed


def recommend(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    items: ItemIndex,
    tag_table: TagTable,
    k: int = 10,
    *,
    popularity: np.ndarray | None = None,
    exclude: Collection[str] = (),
    tags: Sequence[str] = (),
    diversity: float = 0.0,
    explain_results: bool = True,
) -> list[Recommendation]:
    """The top ``k`` items for a profile, best first.

    Args:
        exclude: extra item ids to drop (on top of the profile's own exclusions).
        tags: when given, only items carrying at least one of these tags.
        diversity: MMR trade-off in [0, 1]; 0 ranks by score alone.
    """
    check_request(k, diversity)
    scores = score_items(state, config, ranking, items, tag_table, popularity)
    allowed = allowed_rows(state, items, tag_table, tags, exclude)
    masked = np.where(allowed, scores, -np.inf)
    pool = min(int(allowed.sum()), max(k, ranking.mmr_pool if diversity > 0 else k))
    if pool == 0:
        return []
    head = np.argpartition(-masked, pool - 1)[:pool]
    head = head[np.argsort(-masked[head], kind="stable")]
    rows = _mmr(head, masked, items.matrix, k, diversity) if diversity > 0 else head[:k].tolist()
    fade = ranking.cold_start_events / (ranking.cold_start_events + state.event_count)
    pops = [
        float(ranking.popularity_weight * fade * popularity[r]) if popularity is not None else 0.0
        for r in rows
    ]
    reasons = explain(rows, state, config, items, pops) if explain_results else [()] * len(rows)
    return [
        Recommendation(items.ids[r], float(scores[r]), why)
        for r, why in zip(rows, reasons, strict=True)
    ]


def popularity_scores(counts: np.ndarray) -> np.ndarray:
    """Interaction counts per item -> a prior in [0, 1] (log-scaled, max = 1)."""
    logged = np.log1p(np.maximum(np.asarray(counts, dtype=np.float64), 0.0))
    top = float(logged.max()) if logged.size else 0.0
    result: np.ndarray = (logged / top if top > 0 else logged).astype(np.float32)
    return result
