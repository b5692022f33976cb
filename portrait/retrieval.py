"""Candidate retrieval: several retrievers each propose items for a profile; the union is ranked.

Pure: numpy only, no I/O.

A :class:`UserQuery` reads once what every retriever and feature needs from a profile (its
long- and short-term vectors, the blend the linear ranker uses, the user's own text vector,
their recent items newest first, tag and keyword weights). A :class:`Retriever` proposes its
best rows for the query and scores any rows it is asked about (so each candidate carries every
retriever's score, whoever proposed it). The retrievers here score the catalog exactly; one
backed by an approximate index only has to implement the same two methods.

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

from portrait.config import ProfileConfig
from portrait.covisitation import Neighbours
from portrait.items import ItemIndex
from portrait.profile import ProfileState
from portrait.ranking import RankingConfig, TagTable

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
    """

    items: ItemIndex
    tag_table: TagTable
    popularity: np.ndarray
    cooc: Neighbours | None = None
    trans: Neighbours | None = None
    sequence_half_life: float = 3.0
    _text_norms: np.ndarray | None = field(default=None, repr=False)

    def text_norms(self) -> np.ndarray:
        """Norm of each row's text part (1 where it is 0), computed once per view."""
        if self._text_norms is None:
            part = self.items.matrix[:, : self.items.text_dim]
            norms = np.linalg.norm(part, axis=1)
            self._text_norms = np.where(norms > 0, norms, 1.0).astype(np.float32)
        return self._text_norms

    def with_popularity(self, popularity: np.ndarray) -> RetrievalContext:
        """The same models with another prior (the evaluation's time-respecting one)."""
        return RetrievalContext(
            self.items, self.tag_table, popularity, self.cooc, self.trans,
            self.sequence_half_life, self._text_norms,
        )


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
