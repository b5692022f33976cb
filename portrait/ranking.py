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

Over a large catalog (an :class:`AnnCatalog` whose settings say it serves that size), only
candidates are scored, exactly: the approximate index's nearest rows to the profile vector
(over-fetched until enough survive the filters), the most popular rows and the most popular
rows of the user's strongest tags; a tag filter matching few rows scores those rows instead.
Nothing then passes over the catalog in Python or in numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from portrait.ann import AnnSettings, VectorIndex
from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.items import ItemIndex
from portrait.packed import PackedTags
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
        tags = items.all_tags()
        if isinstance(tags, PackedTags):  # already columns: no loop over the catalog
            self.names = {name: col for col, name in enumerate(tags.names)}
            self.rows = np.repeat(np.arange(len(tags), dtype=np.int64), np.diff(tags.offsets))
            self.cols = tags.codes.astype(np.int64)
        else:
            names: dict[str, int] = {}
            rows: list[int] = []
            cols: list[int] = []
            for row, item_tags in enumerate(tags):
                for tag in item_tags:
                    rows.append(row)
                    cols.append(names.setdefault(tag, len(names)))
            self.names = names
            self.rows = np.asarray(rows, dtype=np.int64)
            self.cols = np.asarray(cols, dtype=np.int64)
        counts = (np.bincount(self.rows, minlength=len(items)) if self.rows.size
                  else np.zeros(len(items)))
        self._per_item = np.sqrt(np.maximum(counts, 1)).astype(np.float32)
        self._counts = np.asarray(counts, dtype=np.float32)
        self.n_items = len(items)
        self._layouts: _TagLayouts | None = None

    def _layout(self) -> _TagLayouts:
        """Row -> tags and tag -> rows offsets, built once on first use (O(tags of the
        catalog)), so the row-wise methods cost what they touch."""
        if self._layouts is None:
            self._layouts = _TagLayouts(self.rows, self.cols, self.n_items, len(self.names))
        return self._layouts

    def per_item_counts(self) -> np.ndarray:
        """How many tags each item carries."""
        return self._counts

    def _user_weights(self, tag_weights: dict[str, float]) -> np.ndarray:
        """The user's tag weights by column, scaled to [-1, 1]."""
        scale = max(abs(w) for w in tag_weights.values()) or 1.0
        user = np.zeros(len(self.names), dtype=np.float32)
        for tag, w in tag_weights.items():
            col = self.names.get(tag)
            if col is not None:
                user[col] = w / scale
        return user

    def affinity(self, tag_weights: dict[str, float]) -> np.ndarray:
        """Per item: the user's tag weights (scaled to [-1, 1]) summed over the item's tags,
        divided by sqrt(number of tags)."""
        if not tag_weights or self.rows.size == 0:
            return np.zeros(self.n_items, dtype=np.float32)
        user = self._user_weights(tag_weights)
        summed = np.bincount(self.rows, weights=user[self.cols], minlength=self.n_items)
        result: np.ndarray = (summed / self._per_item).astype(np.float32)
        return result

    def affinity_of(self, tag_weights: dict[str, float], rows: np.ndarray) -> np.ndarray:
        """:meth:`affinity` of ``rows`` only: what the approximate path scores, without a
        pass over the catalog."""
        rows = np.asarray(rows, dtype=np.int64)
        if not tag_weights or self.rows.size == 0 or rows.size == 0:
            return np.zeros(rows.size, dtype=np.float32)
        user = self._user_weights(tag_weights)
        lay = self._layout()
        starts, ends = lay.row_ptr[rows], lay.row_ptr[rows + 1]
        owner = np.repeat(np.arange(rows.size), ends - starts)
        within = np.arange(owner.size) - np.repeat(np.cumsum(ends - starts) - (ends - starts),
                                                  ends - starts)
        cols = self.cols[starts[owner] + within]
        summed = np.bincount(owner, weights=user[cols], minlength=rows.size)
        result: np.ndarray = (summed / self._per_item[rows]).astype(np.float32)
        return result

    def rows_with(self, tags: Collection[str]) -> np.ndarray:
        """Rows carrying at least one of ``tags``, ascending (cost: those tags' rows)."""
        lay = self._layout()
        parts = []
        for tag in tags:
            col = self.names.get(tag)
            if col is not None:
                parts.append(lay.tag_rows[lay.tag_ptr[col]:lay.tag_ptr[col + 1]])
        if not parts:
            return np.zeros(0, dtype=np.int64)
        return np.unique(np.concatenate(parts))

    def count_with(self, tags: Collection[str]) -> int:
        """How many (row, tag) pairs carry one of ``tags``: a bound on :meth:`rows_with`."""
        lay = self._layout()
        cols = [c for c in (self.names.get(t) for t in tags) if c is not None]
        return sum(int(lay.tag_ptr[c + 1] - lay.tag_ptr[c]) for c in cols)

    def top_rows_per_tag(self, priority: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
        """Per tag, its ``limit`` rows of highest ``priority`` (rows beyond it: 0), as
        ``(rows, ptr)``: tag ``c``'s are ``rows[ptr[c]:ptr[c+1]]``, best first."""
        lay = self._layout()
        n_tags = len(self.names)
        tag_of = np.repeat(np.arange(n_tags), np.diff(lay.tag_ptr))
        pri = np.zeros(lay.tag_rows.size)
        inside = lay.tag_rows < priority.size
        pri[inside] = priority[lay.tag_rows[inside]]
        order = np.lexsort((lay.tag_rows, -pri, tag_of))
        pos = np.arange(order.size) - lay.tag_ptr[tag_of]
        keep = pos < limit
        rows = lay.tag_rows[order][keep]
        ptr = np.searchsorted(tag_of[keep], np.arange(n_tags + 1)).astype(np.int64)
        return rows, ptr

    def mask(self, tags: Collection[str]) -> np.ndarray:
        """Items carrying at least one of ``tags`` (the tags' own rows, not a catalog pass)."""
        out = np.zeros(self.n_items, dtype=bool)
        out[self.rows_with(tags)] = True
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
        grown._layouts = None
        return grown


class _TagLayouts:
    """A :class:`TagTable`'s pairs laid out by row (``row_ptr``: the table's own order,
    rows ascending) and by tag (``tag_rows[tag_ptr[c]:tag_ptr[c+1]]``: the rows of tag ``c``)."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, n_items: int, n_tags: int) -> None:
        self.row_ptr = np.searchsorted(rows, np.arange(n_items + 1)).astype(np.int64)
        by_tag = np.lexsort((rows, cols))
        self.tag_rows = rows[by_tag]
        self.tag_ptr = np.searchsorted(cols[by_tag], np.arange(n_tags + 1)).astype(np.int64)



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


def score_rows(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    items: ItemIndex,
    tag_table: TagTable,
    rows: np.ndarray,
    popularity: np.ndarray | None = None,
    similarity: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`score_items` of ``rows`` only (``similarity``: their dot products with the
    profile vector, when already known)."""
    rows = np.asarray(rows, dtype=np.int64)
    if similarity is None:
        similarity = items.vectors(rows) @ profile_vector(state, config, ranking, items)
    scores: np.ndarray = np.array(similarity, dtype=np.float32)
    if ranking.tag_weight:
        scores += ranking.tag_weight * tag_table.affinity_of(state.tag_weights(config), rows)
    if popularity is not None and ranking.popularity_weight:
        fade = ranking.cold_start_events / (ranking.cold_start_events + state.event_count)
        scores += ranking.popularity_weight * fade * _gather(popularity, rows)
    return scores


def _gather(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``values[rows]``, 0 for rows past its end (rows added after it was computed)."""
    out = np.zeros(rows.size, dtype=values.dtype)
    inside = rows < values.size
    out[inside] = values[rows[inside]]
    return out


_DEFAULT_ANN = AnnSettings()


class AnnCatalog:
    """What ranks a large catalog without scanning it, built once per view and item space:
    the approximate index over ``items``' rows, the most popular rows, and per tag its most
    popular rows. Both rankers read it (the blend here, the learned one through
    :class:`portrait.retrieval.RetrievalContext`).

    Candidates are the index's nearest rows to the query, re-scored exactly, together with
    the popular rows and the rows of the user's strongest tags (what the blend's popularity
    and tag terms could lift above them); only those are scored.
    """

    def __init__(
        self,
        index: VectorIndex,
        tag_table: TagTable,
        popularity: np.ndarray | None,
        settings: AnnSettings = _DEFAULT_ANN,
    ) -> None:
        self.index, self.tag_table, self.settings = index, tag_table, settings
        self.popularity = popularity
        if popularity is None or popularity.size == 0:
            self.top_popular = np.zeros(0, dtype=np.int64)
        else:
            n = min(settings.popular, popularity.size)
            top = np.argpartition(-popularity, n - 1)[:n]
            top = top[popularity[top] > 0]
            self.top_popular = top[np.lexsort((top, -popularity[top]))].astype(np.int64)
        self._tag_top: tuple[np.ndarray, np.ndarray] | None = None
        self._popular_vectors: np.ndarray | None = None

    def popular_similarity(
        self, items: ItemIndex, query: np.ndarray, allowed: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The allowed popular rows and their dot products with ``query``, from a contiguous
        copy of their vectors taken once (a few hundred rows), not a gather per request."""
        rows = self.top_popular[self.top_popular < allowed.size]
        if self._popular_vectors is None or len(self._popular_vectors) != rows.size:
            self._popular_vectors = np.ascontiguousarray(items.vectors(rows))
        sims: np.ndarray = self._popular_vectors @ query
        keep = allowed[rows]
        return rows[keep], sims[keep]

    @classmethod
    def build(
        cls,
        items: ItemIndex,
        tag_table: TagTable,
        popularity: np.ndarray | None,
        settings: AnnSettings = _DEFAULT_ANN,
        *,
        seed: int = 0,
    ) -> AnnCatalog | None:
        """The index over ``items`` when ``settings`` say it serves this size, else None."""
        if not settings.serves(len(items)):
            return None
        return cls(VectorIndex.build(items.matrix, seed=seed), tag_table, popularity, settings)

    def with_popularity(self, popularity: np.ndarray | None) -> AnnCatalog:
        """The same index with another prior (the popular and per-tag rows follow it)."""
        return AnnCatalog(self.index, self.tag_table, popularity, self.settings)

    def serves(self, items: ItemIndex) -> bool:
        return self.settings.serves(len(items))

    def popular_rows(self, allowed: np.ndarray, n: int) -> np.ndarray:
        """The first ``n`` allowed rows of the popular list (best first)."""
        rows = self.top_popular[self.top_popular < allowed.size]
        out: np.ndarray = rows[allowed[rows]][:n]
        return out

    def tag_rows(self, tag_weights: dict[str, float], n_tags: int = 5) -> np.ndarray:
        """The most popular rows (``settings.tag_rows`` each) of the user's ``n_tags``
        strongest positive tags, ascending."""
        strong = sorted(((w, t) for t, w in tag_weights.items() if w > 0), reverse=True)
        if not strong:
            return np.zeros(0, dtype=np.int64)
        if self._tag_top is None:
            pri = self.popularity if self.popularity is not None else np.zeros(0)
            self._tag_top = self.tag_table.top_rows_per_tag(pri, self.settings.tag_rows)
        rows, ptr = self._tag_top
        parts = [
            rows[ptr[c]:ptr[c + 1]]
            for c in (self.tag_table.names.get(t) for _, t in strong[:n_tags])
            if c is not None and c + 1 < ptr.size
        ]
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def nearest(
    index: VectorIndex,
    query: np.ndarray,
    n: int,
    allowed: np.ndarray,
    vectors: Callable[[np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` allowed rows nearest ``query`` in ``index`` and their exact scores (by
    ``vectors``), best first.

    Over-fetches, and fetches more while too few survive the filter (exclusions, superseded
    rows, a tag filter); after four rounds it scores every allowed row, which only a filter
    that leaves very few of the rows near the query comes to.
    """
    fetch = max(2 * n, n + 100)
    limit = allowed.size
    for _ in range(4):
        rows, scores = index.search_scored(query, fetch, vectors)
        inside = rows < limit  # rows the index got after this view's items were taken
        rows, scores = rows[inside], scores[inside]
        keep = allowed[rows]
        if int(keep.sum()) >= n or fetch >= len(index):
            return rows[keep][:n], scores[keep][:n]
        fetch *= 4
    rows = np.flatnonzero(allowed)
    scores = (vectors(rows) @ query).astype(np.float32)
    order = np.lexsort((rows, -scores))[:n]
    return rows[order], scores[order]


def _ann_candidates(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    items: ItemIndex,
    tag_table: TagTable,
    ann: AnnCatalog,
    allowed: np.ndarray,
    pool: int,
    tags: Sequence[str],
    query: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The rows the blend scores exactly instead of the catalog (allowed ones only, ascending)
    and their similarity to the profile vector ``query`` (each row's vector read once)."""
    if tags and tag_table.count_with(tags) <= ann.settings.exact_tags_below:
        tagged = tag_table.rows_with(tags)  # few: all of them, exactly
        rows: np.ndarray = tagged[allowed[tagged]]
        return rows, items.vectors(rows) @ query
    near, near_sims = nearest(ann.index, query, pool, allowed, items.vectors)
    popular, popular_sims = ann.popular_similarity(items, query, allowed)
    parts, sims = [near, popular], [near_sims, popular_sims]
    if ranking.tag_weight:
        by_tag = ann.tag_rows(state.tag_weights(config))
        by_tag = np.setdiff1d(by_tag[by_tag < allowed.size], np.concatenate([near, popular]))
        by_tag = by_tag[allowed[by_tag]]
        parts.append(by_tag)
        sims.append(items.vectors(by_tag) @ query)
    rows, first = np.unique(np.concatenate(parts), return_index=True)
    return rows, np.concatenate(sims)[first]


def ann_scores(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    items: ItemIndex,
    tag_table: TagTable,
    ann: AnnCatalog,
    allowed: np.ndarray,
    popularity: np.ndarray | None = None,
    k: int = 20,
) -> np.ndarray:
    """One score per row as the approximate path ranks them, for the evaluation's full
    ranking: the candidates :func:`recommend` scores for ``k`` results (no diversity), by
    their exact blend score, above every other row; the rest keep the exact blend's order
    below them (a whole-catalog pass: the evaluation's, never the service's)."""
    pool = max(k, 1)
    query = profile_vector(state, config, ranking, items)
    rows, sims = _ann_candidates(
        state, config, ranking, items, tag_table, ann, allowed, pool, (), query
    )
    base = score_items(state, config, ranking, items, tag_table, popularity).astype(np.float64)
    if rows.size == 0:
        return base
    top = score_rows(state, config, ranking, items, tag_table, rows, popularity, sims)
    order = np.lexsort((rows, -top))[:pool]
    out: np.ndarray = base - (base.max() - base.min() + 1.0) + (float(top.min()) - 1.0)
    out[rows[order]] = top[order]
    return out


def _mmr(
    candidates: np.ndarray, rel: np.ndarray, vecs: np.ndarray, k: int, lam: float
) -> list[int]:
    """Greedy maximal marginal relevance over ``candidates`` (row indices), given their
    relevance ``rel`` and vectors ``vecs`` (both aligned with ``candidates``)."""
    chosen: list[int] = []
    max_sim = np.full(len(candidates), -np.inf)
    available = np.ones(len(candidates), dtype=bool)
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
    sims = items.vectors(rows) @ items.vectors(recent_rows).T
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
    ann: AnnCatalog | None = None,
) -> list[Recommendation]:
    """The top ``k`` items for a profile, best first.

    Args:
        exclude: extra item ids to drop (on top of the profile's own exclusions).
        tags: when given, only items carrying at least one of these tags.
        diversity: MMR trade-off in [0, 1]; 0 ranks by score alone.
        ann: the view's approximate index; when it serves this catalog's size, only its
            candidates are scored (no pass over the catalog), else every allowed row is.
    """
    check_request(k, diversity)
    allowed = allowed_rows(state, items, tag_table, tags, exclude)
    pool = min(int(allowed.sum()), max(k, ranking.mmr_pool if diversity > 0 else k))
    if pool == 0:
        return []
    if ann is not None and ann.serves(items):
        query = profile_vector(state, config, ranking, items)
        cand, sims = _ann_candidates(
            state, config, ranking, items, tag_table, ann, allowed, pool, tags, query
        )
        cand_scores = score_rows(state, config, ranking, items, tag_table, cand, popularity,
                                 sims)
    else:
        cand = np.flatnonzero(allowed)
        cand_scores = score_items(state, config, ranking, items, tag_table, popularity)[cand]
    pool = min(pool, cand.size)
    if pool == 0:
        return []
    head = np.argpartition(-cand_scores, pool - 1)[:pool]
    head = head[np.lexsort((cand[head], -cand_scores[head]))]
    head_rows, head_scores = cand[head], cand_scores[head]
    if diversity > 0:
        picked = _mmr(head_rows, head_scores, items.vectors(head_rows), k, diversity)
        at = {int(r): i for i, r in enumerate(head_rows)}
        order = np.asarray([at[r] for r in picked], dtype=np.int64)
    else:
        order = np.arange(min(k, head_rows.size))
    rows = [int(r) for r in head_rows[order]]
    fade = ranking.cold_start_events / (ranking.cold_start_events + state.event_count)
    pops = [
        float(ranking.popularity_weight * fade * popularity[r])
        if popularity is not None and r < popularity.size else 0.0
        for r in rows
    ]
    reasons = explain(rows, state, config, items, pops) if explain_results else [()] * len(rows)
    return [
        Recommendation(items.ids[r], float(s), why)
        for r, s, why in zip(rows, head_scores[order], reasons, strict=True)
    ]


def popularity_scores(counts: np.ndarray) -> np.ndarray:
    """Interaction counts per item -> a prior in [0, 1] (log-scaled, max = 1)."""
    logged = np.log1p(np.maximum(np.asarray(counts, dtype=np.float64), 0.0))
    top = float(logged.max()) if logged.size else 0.0
    result: np.ndarray = (logged / top if top > 0 else logged).astype(np.float32)
    return result
