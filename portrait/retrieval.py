"""Candidate retrieval: several retrievers each propose items for a profile; the union is ranked.

Pure: numpy only, no I/O.

A :class:`UserQuery` reads once what every retriever and feature needs from a profile (its
long- and short-term vectors, the blend the linear ranker uses, the user's own text vector,
their recent items newest first, tag and keyword weights). A :class:`Retriever` proposes its
best rows for the query and scores any rows it is asked about (so each candidate carries every
retriever's score, whoever proposed it). :class:`ExactRetriever` scores the catalog
exactly; over a large catalog (a context with an :class:`portrait.ranking.AnnCatalog` that
serves its size) :func:`retrievers_for` gives row-wise ones instead: ``vector`` and ``text``
propose from approximate indexes and re-score exactly, the others propose from bounded lists
(neighbours of the recent items, the popular rows, the rows of the strongest tags), and every
one scores just the rows it is asked about, so nothing passes over the catalog.

* ``vector``: cosine to the blended long/short vector, the linear ranker's main term;
* ``cooc``: item co-occurrence neighbours of the recent items, weighted by recency;
* ``transition``: what users reached next after the recent items, weighted by recency;
* ``text``: cosine between the user's own words (reviews, searches) and the items' text part;
* ``tags``: affinity of the user's tag weights to the items' tags;
* ``popular``: the popularity prior (what a cold user gets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from portrait.ann import VectorIndex
from portrait.config import ProfileConfig
from portrait.covisitation import Neighbours
from portrait.items import ItemIndex
from portrait.profile import ProfileState
from portrait.ranking import AnnCatalog, RankingConfig, TagTable, nearest

RETRIEVERS = ("vector", "cooc", "transition", "text", "tags", "popular")


@dataclass
class RetrievalContext:
    """What retrieval and features read besides the profile: one catalog view's models.

    Attributes:
        items: the item space the profile's vectors are composed in.
        tag_table: the items' tags.
        popularity: the popularity prior per row in [0, 1] (zeros when unknown).
        cooc, trans: neighbour lists over ``items``' rows (None: no retrain yet).
        sequence_half_life: recency half-life of the recent items, in items.
        ann: the approximate index over ``items`` with its popular and per-tag rows (built
            once per view and item space; None: exact retrieval).
        text_ann: the approximate index over the rows' text parts, each scaled to unit
            length (:func:`text_index`), for the ``text`` retriever.
    """

    items: ItemIndex
    tag_table: TagTable
    popularity: np.ndarray
    cooc: Neighbours | None = None
    trans: Neighbours | None = None
    sequence_half_life: float = 3.0
    ann: AnnCatalog | None = None
    text_ann: VectorIndex | None = None
    _text_norms: np.ndarray | None = field(default=None, repr=False)

    def text_norms(self) -> np.ndarray:
        """Norm of each row's text part (1 where it is 0), computed once per view."""
        if self._text_norms is None:
            part = self.items.matrix[:, : self.items.text_dim]
            norms = np.linalg.norm(part, axis=1)
            self._text_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        return self._text_norms

    def text_norms_of(self, rows: np.ndarray) -> np.ndarray:
        """:meth:`text_norms` of ``rows`` (computed for those rows alone unless the whole
        catalog's are already known)."""
        known = self._text_norms
        if known is not None and (rows.size == 0 or int(rows.max()) < known.size):
            out: np.ndarray = known[rows]
            return out
        norms = np.linalg.norm(self.items.vectors(rows)[:, : self.items.text_dim], axis=1)
        return np.where(norms > 0, norms, 1.0).astype(np.float32)

    def text_vectors(self, rows: np.ndarray) -> np.ndarray:
        """The text parts of ``rows``, each scaled to unit length (what ``text`` compares)."""
        part = self.items.vectors(rows)[:, : self.items.text_dim]
        out: np.ndarray = part / self.text_norms_of(rows)[:, None]
        return out

    def approximate(self) -> bool:
        """Whether retrieval goes through the approximate index (it serves this size)."""
        return self.ann is not None and self.ann.serves(self.items)

    def with_popularity(self, popularity: np.ndarray) -> RetrievalContext:
        """The same models with another prior (the evaluation's time-respecting one)."""
        return RetrievalContext(
            self.items, self.tag_table, popularity, self.cooc, self.trans,
            self.sequence_half_life,
            self.ann.with_popularity(popularity) if self.ann is not None else None,
            self.text_ann, self._text_norms,
        )


def text_index(items: ItemIndex, *, seed: int = 0) -> VectorIndex:
    """The approximate index of ``items``' text parts, each row scaled to unit length."""
    part = items.matrix[:, : items.text_dim]
    norms = np.linalg.norm(part, axis=1, keepdims=True)
    return VectorIndex.build(part / np.where(norms > 0, norms, 1.0), seed=seed)


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


class UserQuery:
    """One profile read for retrieval and features (built once per request or test point)."""

    def __init__(
        self,
        state: ProfileState,
        config: ProfileConfig,
        ranking: RankingConfig,
        ctx: RetrievalContext,
    ) -> None:
        self.state, self.config, self.ranking, self.ctx = state, config, ranking, ctx
        items = ctx.items
        long, short = state.vectors(config, items)
        self.long = _unit(long).astype(np.float32)
        self.short = _unit(short).astype(np.float32)
        self.blend = ((1 - ranking.short_mix) * self.long + ranking.short_mix * self.short).astype(
            np.float32
        )
        # The user's own words: the long-term text accumulator alone, normalised.
        self.text: np.ndarray | None = None
        if state.text_acc is not None and state.text_acc.shape[1] == items.text_dim:
            t = _unit(state.text_acc[0])
            self.text = t.astype(np.float32) if np.linalg.norm(t) > 0 else None
        # Recent items the user wanted, newest first, each once (dismissed ones left out).
        rows: list[int] = []
        times: list[float] = []
        seen: set[str] = set()
        for occurred_at, _, item_id, typ in reversed(state.recent):
            if item_id in seen:
                continue
            seen.add(item_id)
            if typ == "dismiss":
                continue
            r = items.row(item_id)
            if r is not None:
                rows.append(r)
                times.append(occurred_at)
        self.recent_ids = [items.ids[r] for r in rows]
        self.recent_rows = np.asarray(rows, dtype=np.int64)
        self.recent_times = np.asarray(times, dtype=np.float64)
        self.recency = np.exp2(-np.arange(len(rows)) / ctx.sequence_half_life)
        self.recent_levels = state.long_weights_of(config, self.recent_ids)
        self.tag_weights = state.tag_weights(config)
        self.keyword_weights = state.keyword_weights(config)
        self._scores: dict[str, np.ndarray] = {}
        self._sparse: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def full_scores(self, name: str) -> np.ndarray:
        """One exact retriever's score of every catalog row (computed once per query)."""
        cached = self._scores.get(name)
        if cached is None:
            cached = self._scores[name] = _SCORERS[name](self)
        return cached


def _vector(q: UserQuery) -> np.ndarray:
    out: np.ndarray = q.ctx.items.column_major() @ q.blend
    return out


def _cooc(q: UserQuery) -> np.ndarray:
    if q.ctx.cooc is None:
        return np.zeros(len(q.ctx.items), dtype=np.float64)
    return q.ctx.cooc.score(q.recent_rows, q.recency)


def _transition(q: UserQuery) -> np.ndarray:
    if q.ctx.trans is None:
        return np.zeros(len(q.ctx.items), dtype=np.float64)
    return q.ctx.trans.score(q.recent_rows, q.recency)


def _text(q: UserQuery) -> np.ndarray:
    if q.text is None:
        return np.zeros(len(q.ctx.items), dtype=np.float32)
    items = q.ctx.items
    out: np.ndarray = (items.column_major()[:, : items.text_dim] @ q.text) / q.ctx.text_norms()
    return out


def _tags(q: UserQuery) -> np.ndarray:
    return q.ctx.tag_table.affinity(q.tag_weights)


def _popular(q: UserQuery) -> np.ndarray:
    return q.ctx.popularity


def _neighbours_of(q: UserQuery, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The rows a neighbour model gives a weight for the recent items, and those weights."""
    cached = q._sparse.get(name)
    if cached is None:
        nb = q.ctx.cooc if name == "cooc" else q.ctx.trans
        cached = (
            nb.scores_of(q.recent_rows, q.recency) if nb is not None
            else (np.zeros(0, np.int64), np.zeros(0, np.float64))
        )
        q._sparse[name] = cached
    return cached


_SCORERS = {
    "vector": _vector, "cooc": _cooc, "transition": _transition, "text": _text,
    "tags": _tags, "popular": _popular,
}


class Retriever(Protocol):
    """Proposes candidates for a query and scores the candidates others proposed."""

    @property
    def name(self) -> str: ...

    def propose(self, query: UserQuery, n: int, allowed: np.ndarray) -> np.ndarray:
        """Up to ``n`` allowed rows with a positive claim, best first."""
        ...

    def score(self, query: UserQuery, rows: np.ndarray) -> np.ndarray:
        """This retriever's score of ``rows``."""
        ...


@dataclass(frozen=True)
class ExactRetriever:
    """A retriever that scores the whole catalog (fine up to ~10^5 items on one core)."""

    name: str

    def propose(self, query: UserQuery, n: int, allowed: np.ndarray) -> np.ndarray:
        s = query.full_scores(self.name)
        if self.name == "vector":
            rows = np.flatnonzero(allowed)
        else:  # a zero score is no claim (no neighbours, no tags, ...): most rows, skipped
            rows = np.flatnonzero((s > 0) & allowed)
        if rows.size > n:
            rows = rows[np.argpartition(-s[rows], n - 1)[:n]]
        out: np.ndarray = rows[np.lexsort((rows, -s[rows]))]
        return out

    def score(self, query: UserQuery, rows: np.ndarray) -> np.ndarray:
        out: np.ndarray = query.full_scores(self.name)[rows]
        return out


def exact_retrievers(names: Sequence[str] = RETRIEVERS) -> tuple[ExactRetriever, ...]:
    return tuple(ExactRetriever(n) for n in names)


def _best(rows: np.ndarray, scores: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` best ``rows`` by ``scores``, best first (ties: lower row first)."""
    if rows.size > n:
        top = np.argpartition(-scores, n - 1)[:n]
        rows, scores = rows[top], scores[top]
    out: np.ndarray = rows[np.lexsort((rows, -scores))]
    return out


def _inside(rows: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """``rows`` within the catalog the mask covers and allowed by it."""
    rows = rows[rows < allowed.size]
    out: np.ndarray = rows[allowed[rows]]
    return out


@dataclass(frozen=True)
class RowRetriever:
    """A retriever that never passes over the catalog: it proposes from the approximate
    indexes (``vector``, ``text``) or bounded lists (``cooc``, ``transition``: the recent
    items' neighbours; ``popular``: the popular rows; ``tags``: the strongest tags' most
    popular rows) and scores only the rows it is asked about, with the same values as
    :class:`ExactRetriever` (the proposals differ only where the index misses a row)."""

    name: str

    def propose(self, query: UserQuery, n: int, allowed: np.ndarray) -> np.ndarray:
        ctx = query.ctx
        ann = ctx.ann
        if self.name == "vector" and ann is not None:
            rows, _ = nearest(ann.index, query.blend, n, allowed, ctx.items.vectors)
            return rows
        if self.name == "text":
            if query.text is None or ctx.text_ann is None:
                return np.zeros(0, np.int64)
            rows, scores = nearest(ctx.text_ann, query.text, n, allowed, ctx.text_vectors)
            out: np.ndarray = rows[scores > 0]
            return out
        if self.name in ("cooc", "transition"):
            rows, scores = _neighbours_of(query, self.name)
            keep = scores > 0
            rows, scores = rows[keep], scores[keep]
            ok = allowed[rows]
            return _best(rows[ok], scores[ok], n)
        if self.name == "popular" and ann is not None:
            rows = ann.popular_rows(allowed, n)
            return rows[rows < ctx.popularity.size]
        if self.name == "tags" and ann is not None:
            rows = _inside(ann.tag_rows(query.tag_weights), allowed)
            scores = self.score(query, rows)
            keep = scores > 0
            return _best(rows[keep], scores[keep], n)
        return np.zeros(0, np.int64)

    def score(self, query: UserQuery, rows: np.ndarray) -> np.ndarray:
        ctx = query.ctx
        rows = np.asarray(rows, dtype=np.int64)
        if self.name == "vector":
            out: np.ndarray = ctx.items.vectors(rows) @ query.blend
            return out
        if self.name == "text":
            if query.text is None:
                return np.zeros(rows.size, np.float32)
            td = ctx.items.text_dim
            out = (ctx.items.vectors(rows)[:, :td] @ query.text) / ctx.text_norms_of(rows)
            return out
        if self.name in ("cooc", "transition"):
            found, scores = _neighbours_of(query, self.name)
            at = np.minimum(np.searchsorted(found, rows), max(found.size - 1, 0))
            hit = (found[at] == rows) if found.size else np.zeros(rows.size, bool)
            return np.where(hit, scores[at] if found.size else 0.0, 0.0)
        if self.name == "tags":
            return ctx.tag_table.affinity_of(query.tag_weights, rows)
        if self.name == "popular":
            pop = ctx.popularity
            out = np.zeros(rows.size, dtype=pop.dtype)
            inside = rows < pop.size
            out[inside] = pop[rows[inside]]
            return out
        raise ValueError(f"unknown retriever {self.name!r}")


def retrievers_for(
    ctx: RetrievalContext, names: Sequence[str] = RETRIEVERS
) -> tuple[Retriever, ...]:
    """The retrievers a request over ``ctx`` uses: row-wise ones when its approximate index
    serves the catalog's size, else the exact ones."""
    if ctx.approximate():
        return tuple(RowRetriever(n) for n in names)
    return exact_retrievers(names)


@dataclass(frozen=True)
class Candidates:
    """The union of the retrievers' proposals with each retriever's score and rank.

    ``ranks[j, i]`` is the position of ``rows[i]`` in retriever ``j``'s proposal, ``n`` (the
    per-retriever depth) where it did not propose it.
    """

    rows: np.ndarray
    scores: np.ndarray  # (n_retrievers, n_candidates) float64
    ranks: np.ndarray  # (n_retrievers, n_candidates) float64
    names: tuple[str, ...]


def retrieve(
    query: UserQuery, retrievers: Sequence[Retriever], n: int, allowed: np.ndarray
) -> Candidates:
    """Union of each retriever's top ``n`` allowed rows, with every retriever's score of each."""
    proposals = [r.propose(query, n, allowed) for r in retrievers]
    rows = np.unique(np.concatenate(proposals)) if proposals else np.zeros(0, np.int64)
    scores = np.zeros((len(retrievers), rows.size), dtype=np.float64)
    ranks = np.full((len(retrievers), rows.size), float(n), dtype=np.float64)
    for j, (r, prop) in enumerate(zip(retrievers, proposals, strict=True)):
        scores[j] = r.score(query, rows)
        pos = np.searchsorted(rows, prop)
        ranks[j, pos] = np.arange(prop.size, dtype=np.float64)
    return Candidates(rows, scores, ranks, tuple(r.name for r in retrievers))
