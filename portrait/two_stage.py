"""Two-stage ranking: retrieve candidates, compute their features, order them by the learned
ranker. The one code path the service serves and the evaluation measures.

Pure: numpy and the learned ranker, no I/O.

Explanations come from what drove each score: the ranker's per-feature contributions of the
shown items (path attribution over the trees, :class:`portrait.learned_ranker.TreePaths`),
summed by the kind of evidence behind each feature and mapped back to the profile's part that
produced it: the recent item the candidate follows or resembles (co-occurrence, transition,
similarity features), the interest (tag) or the user's own words (keywords, text
similarity) it matches, or its popularity.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from portrait.config import ProfileConfig
from portrait.learned_ranker import BoundRanker
from portrait.profile import ProfileState
from portrait.ranker_features import features
from portrait.ranking import (
    RankingConfig,
    Reason,
    Recommendation,
    _mmr,
    allowed_rows,
    check_request,
)
from portrait.retrieval import RetrievalContext, UserQuery, retrieve, retrievers_for

LEARNED = "learned"
BLEND = "blend"

# Which profile evidence each feature stands for (a feature's name starts with its retriever).
_EVIDENCE = {
    "vector": "similar_to", "cooc": "similar_to", "transition": "similar_to",
    "cos_short": "similar_to", "sim_last": "similar_to", "sim_recent_max": "similar_to",
    "sim_recent_age": "similar_to", "hours_since_similar": "similar_to",
    "rating_level": "similar_to", "cos_long": "interest", "tags": "interest",
    "item_tags": "interest", "text": "words", "keyword_tags": "words", "popular": "popular",
}


def evidence_of(feature: str) -> str | None:
    """The kind of reason a feature stands for (None: the user's activity, not the item)."""
    if feature in _EVIDENCE:
        return _EVIDENCE[feature]
    head = feature.rsplit("_", 1)[0]
    return _EVIDENCE.get(head)


@dataclass(frozen=True)
class Ranked:
    """Candidates in ranker order: rows, their scores and feature rows."""

    rows: np.ndarray
    scores: np.ndarray
    x: np.ndarray


def can_rank(query: UserQuery) -> bool:
    """Whether the learned ranker has anything of the user's to rank by (else: the blend)."""
    return query.recent_rows.size > 0 or query.text is not None


def rank_candidates(query: UserQuery, ranker: BoundRanker, allowed: np.ndarray) -> Ranked:
    """The union of the retrievers' allowed candidates, best first by the ranker (row-wise
    retrievers when the context's approximate index serves its catalog)."""
    retrievers = retrievers_for(query.ctx, ranker.settings.retrievers)
    cands = retrieve(query, retrievers, ranker.settings.candidates, allowed)
    x = features(query, cands, ranker.settings.extras)
    scores = ranker.predict(x)
    order = np.lexsort((cands.rows, -scores))
    return Ranked(cands.rows[order], scores[order], x[order])


def catalog_scores(query: UserQuery, ranker: BoundRanker, allowed: np.ndarray) -> np.ndarray:
    """One score per catalog row for the evaluation's full ranking: candidates by the ranker,
    above every other row; the rest keep the linear blend's vector order below them."""
    ranked = rank_candidates(query, ranker, allowed)
    base = query.full_scores("vector").astype(np.float64)
    if ranked.rows.size == 0:
        return base
    out: np.ndarray = base - (base.max() - base.min() + 1.0) + (ranked.scores.min() - 1.0)
    out[ranked.rows] = ranked.scores
    return out


def _reasons(
    query: UserQuery, rows: np.ndarray, x: np.ndarray, contrib: np.ndarray,
    names: Sequence[str], max_reasons: int,
) -> list[tuple[Reason, ...]]:
    items = query.ctx.items
    kinds = [evidence_of(n) for n in names]
    recent = query.recent_rows
    sims = items.vectors(rows) @ items.vectors(recent).T if recent.size else None
    tag_w = query.tag_weights
    top_words = sorted(
        ((w, k) for k, w in query.keyword_weights.items() if w > 0), reverse=True
    )[:1]
    out = []
    for i, row in enumerate(rows):
        by_kind: dict[str, float] = {}
        for kind, c in zip(kinds, contrib[i, :-1], strict=True):
            if kind is not None:
                by_kind[kind] = by_kind.get(kind, 0.0) + float(c)
        reasons: list[Reason] = []
        for kind, weight in sorted(by_kind.items(), key=lambda kv: -kv[1]):
            if weight <= 0:
                break
            w = round(weight, 4)
            if kind == "similar_to" and sims is not None:
                # the recent item behind it: the one it follows or resembles most, by the
                # same recency weighting the retrievers use
                j = int(np.argmax(sims[i] * query.recency))
                reasons.append(Reason("similar_to", query.recent_ids[j], w))
            elif kind == "interest":
                liked = sorted(
                    ((tag_w[t], t) for t in items.tags(int(row)) if tag_w.get(t, 0.0) > 0),
                    reverse=True,
                )
                if liked:
                    reasons.append(Reason("interest", liked[0][1], w))
            elif kind == "words" and top_words:
                reasons.append(Reason("keyword", top_words[0][1], w))
            elif kind == "popular":
                reasons.append(Reason("popular", "", w))
        out.append(tuple(reasons[:max_reasons]))
    return out


def recommend_learned(
    state: ProfileState,
    config: ProfileConfig,
    ranking: RankingConfig,
    ctx: RetrievalContext,
    ranker: BoundRanker,
    k: int = 10,
    *,
    exclude: Collection[str] = (),
    tags: Sequence[str] = (),
    diversity: float = 0.0,
    explain_results: bool = True,
    max_reasons: int = 3,
) -> list[Recommendation] | None:
    """The top ``k`` by the learned ranker; None when it has nothing of the user's to rank by
    (the caller serves the blend then). Same exclusions, tag filter and diversity as
    :func:`portrait.ranking.recommend`."""
    check_request(k, diversity)
    query = UserQuery(state, config, ranking, ctx)
    if not can_rank(query):
        return None
    items = ctx.items
    allowed = allowed_rows(state, items, ctx.tag_table, tags, exclude)
    ranked = rank_candidates(query, ranker, allowed)
    if ranked.rows.size == 0:
        return []
    if diversity > 0:
        pool = min(ranked.rows.size, max(k, ranking.mmr_pool))
        head = ranked.rows[:pool]
        chosen = _mmr(head, ranked.scores[:pool], items.vectors(head), k, diversity)
        pos = {int(r): i for i, r in enumerate(ranked.rows)}
        picked = np.asarray([pos[r] for r in chosen], dtype=np.int64)
    else:
        picked = np.arange(min(k, ranked.rows.size))
    rows, x = ranked.rows[picked], ranked.x[picked]
    if explain_results:
        contrib = ranker.contributions(x)
        reasons = _reasons(query, rows, x, contrib, ranker.settings.feature_names, max_reasons)
    else:
        reasons = [()] * len(rows)
    return [
        Recommendation(items.ids[int(r)], float(s), why)
        for r, s, why in zip(rows, ranked.scores[picked], reasons, strict=True)
    ]
