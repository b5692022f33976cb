"""Features of (user, candidate) pairs for the learned ranker: one function, online and offline.

Pure: numpy only, no I/O.

Per candidate, besides each retriever's score and rank (:mod:`portrait.retrieval`):

* ``cos_long``, ``cos_short``: cosine to the profile's long- and short-term vectors;
* ``sim_last``, ``sim_recent_max``: similarity to the newest recent item and the most similar
  one; ``sim_recent_age``: how many items ago that most similar one was; ``hours_since_similar``:
  how long before the profile's last event the user touched it (log1p hours);
* ``rating_level``: the user's weight (rating level, or event weight) on their recent items,
  averaged with the candidate's similarity to each as weight: "how they rated items like it";
* ``keyword_tags``: the user's keywords (from their reviews and searches) matched to the
  candidate's tags;
* ``text_sim_last``, ``text_sim_recent_max``: the same similarities to the recent items as
  ``sim_*`` but in the text part of the item vectors alone (what the language model says
  of the items' descriptions, apart from who else interacted with them);
* ``item_tags``: how many tags the item has; ``user_events``, ``user_items``, ``user_texts``:
  how active the user is (log1p counts).

Every value is finite: NaN and infinities are replaced by 0 before a model sees them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from portrait.retrieval import RETRIEVERS, Candidates, UserQuery

EXTRAS = (
    "cos_long", "cos_short", "sim_last", "sim_recent_max", "sim_recent_age",
    "hours_since_similar", "rating_level", "keyword_tags", "text_sim_last",
    "text_sim_recent_max", "item_tags", "user_events", "user_items", "user_texts",
)
# What the "no text" ablation removes: the text retriever's features (the user's own words),
# the keyword match, and the similarity of the items' texts alone (the encoder's part of the
# item vectors, apart from the collaborative part).
TEXT_FEATURES = (
    "text_score", "text_rank", "keyword_tags", "text_sim_last", "text_sim_recent_max"
)


def feature_names(retrievers: Sequence[str] = RETRIEVERS, extras: Sequence[str] = EXTRAS) -> tuple[
    str, ...
]:
    """The columns :func:`features` returns for these retrievers and extras, in order."""
    unknown = [e for e in extras if e not in EXTRAS]
    if unknown:
        raise ValueError(f"unknown features {unknown}")
    return tuple(f"{r}_{kind}" for r in retrievers for kind in ("score", "rank")) + tuple(extras)


def _log1p_count(counts: dict[str, int], types: Sequence[str] | None = None) -> float:
    total = sum(v for k, v in counts.items() if types is None or k in types)
    return float(np.log1p(total))


def features(query: UserQuery, cands: Candidates, extras: Sequence[str] = EXTRAS) -> np.ndarray:
    """``(len(cands.rows), len(feature_names(cands.names, extras)))`` float32, all finite."""
    rows = cands.rows
    n = rows.size
    cols: list[np.ndarray] = []
    for j in range(len(cands.names)):
        cols += [cands.scores[j], cands.ranks[j]]
    if not extras:
        return _finite(np.stack(cols, axis=1) if cols else np.zeros((n, 0)))
    items = query.ctx.items
    m = items.vectors(rows)
    values: dict[str, np.ndarray] = {
        "cos_long": m @ query.long,
        "cos_short": m @ query.short,
    }
    recent = query.recent_rows
    if recent.size:
        recent_m = items.vectors(recent)
        sims = m @ recent_m.T  # (n, r)
        best = np.argmax(sims, axis=1)
        values["sim_last"] = sims[:, 0]
        values["sim_recent_max"] = sims[np.arange(n), best]
        values["sim_recent_age"] = best.astype(np.float64)
        t_ref = query.state.t_ref or 0.0
        values["hours_since_similar"] = np.log1p(
            np.maximum(t_ref - query.recent_times[best], 0.0) / 3600.0
        )
        pos = np.maximum(sims, 0.0)
        weight = pos.sum(axis=1)
        values["rating_level"] = np.where(
            weight > 0, (pos @ query.recent_levels) / np.where(weight > 0, weight, 1.0), 0.0
        )
        if "text_sim_last" in extras or "text_sim_recent_max" in extras:
            td = items.text_dim
            ctx = query.ctx
            text = (m[:, :td] / ctx.text_norms_of(rows)[:, None]) @ (
                recent_m[:, :td] / ctx.text_norms_of(recent)[:, None]
            ).T
            values["text_sim_last"] = text[:, 0]
            values["text_sim_recent_max"] = text.max(axis=1)
    else:
        for name in ("sim_last", "sim_recent_max", "hours_since_similar", "rating_level",
                     "text_sim_last", "text_sim_recent_max"):
            values[name] = np.zeros(n)
        values["sim_recent_age"] = np.full(n, float(query.config.recent_items))
    if "keyword_tags" in extras:
        values["keyword_tags"] = (
            query.ctx.tag_table.affinity_of(query.keyword_weights, rows)
            if query.keyword_weights else np.zeros(n)
        )
    per_item = query.ctx.tag_table.per_item_counts()
    values["item_tags"] = per_item[rows]
    counts = query.state.counts
    values["user_events"] = np.full(n, _log1p_count(counts))
    values["user_items"] = np.full(n, float(np.log1p(len(query.state.item_slots))))
    values["user_texts"] = np.full(n, _log1p_count(counts, ("review", "search")))
    cols += [values[e] for e in extras]
    return _finite(np.stack(cols, axis=1))


def _finite(x: np.ndarray) -> np.ndarray:
    out = np.asarray(x, dtype=np.float32)
    if not np.isfinite(out).all():
        out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    return out
