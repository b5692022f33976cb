"""Ranking metrics over full-catalog ranks, and bootstrap confidence intervals.

Pure: numpy and the standard library only, no I/O.

Conventions
-----------
* A *rank* is the 0-based position of a target item in a system's ranked list of every
  eligible catalog item (rank 0 = first). A target that cannot be ranked at all (it is not in
  the catalog) has rank :data:`UNRANKED` (``inf``) and counts as a miss everywhere.
* Single held-out item (leave-last-out), per user:

  - ``HR@K``     = 1 if rank < K else 0
  - ``Recall@K`` = HR@K (one relevant item)
  - ``NDCG@K``   = 1 / log2(rank + 2) if rank < K else 0 (rank 0 -> 1, rank 2 -> 1/log2(4))
  - ``MRR``      = 1 / (rank + 1), over the full ranking (no cut-off)

* Several held-out items (temporal split), per user with target ranks ``r_1..r_n``:

  - ``HR@K``     = 1 if any r_i < K
  - ``Recall@K`` = #{r_i < K} / n
  - ``NDCG@K``   = sum_{r_i < K} 1/log2(r_i + 2) / IDCG, IDCG = sum_{j < min(n, K)} 1/log2(j + 2)
  - ``MRR``      = 1 / (min r_i + 1)

  With n = 1 these equal the single-item definitions.

Bootstrap
---------
:func:`bootstrap_ci` resamples users with replacement (percentile interval);
:func:`paired_bootstrap` resamples the *same* users for both systems, so the interval of the
difference accounts for the correlation between two systems evaluated on one user set. Both
are seeded and deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

UNRANKED = float("inf")
DEFAULT_RESAMPLES = 2000
_CHUNK_ELEMENTS = 4_000_000  # resample indices generated this many at a time


# -- per-user metrics -------------------------------------------------------------------------


def hit_rate(ranks: np.ndarray, k: int) -> np.ndarray:
    """HR@K per user for single-target ranks (1.0 or 0.0)."""
    r = np.asarray(ranks, dtype=np.float64)
    return (r < k).astype(np.float64)


def recall(ranks: np.ndarray, k: int) -> np.ndarray:
    """Recall@K per user for single-target ranks (equals HR@K)."""
    return hit_rate(ranks, k)


def ndcg(ranks: np.ndarray, k: int) -> np.ndarray:
    """NDCG@K per user for single-target ranks: ``1/log2(rank+2)`` inside the cut-off."""
    r = np.asarray(ranks, dtype=np.float64)
    out = np.zeros(r.shape, dtype=np.float64)
    inside = r < k
    out[inside] = 1.0 / np.log2(r[inside] + 2.0)
    return out


def mrr(ranks: np.ndarray) -> np.ndarray:
    """Reciprocal rank per user over the full ranking; an unranked target scores 0."""
    r = np.asarray(ranks, dtype=np.float64)
    out = np.zeros(r.shape, dtype=np.float64)
    ok = np.isfinite(r)
    out[ok] = 1.0 / (r[ok] + 1.0)
    return out


def multi_target_metrics(target_ranks: Sequence[Sequence[float]], k: int) -> dict[str, np.ndarray]:
    """HR@K, Recall@K, NDCG@K and MRR per user for users with one or more targets."""
    n = len(target_ranks)
    hr = np.zeros(n)
    rec = np.zeros(n)
    nd = np.zeros(n)
    rr = np.zeros(n)
    discounts = 1.0 / np.log2(np.arange(k) + 2.0)
    for u, ranks in enumerate(target_ranks):
        r = np.asarray(ranks, dtype=np.float64)
        if r.size == 0:
            raise ValueError(f"user {u} has no targets")
        inside = r[r < k]
        hr[u] = 1.0 if inside.size else 0.0
        rec[u] = inside.size / r.size
        idcg = discounts[: min(r.size, k)].sum()
        nd[u] = float((1.0 / np.log2(inside + 2.0)).sum() / idcg) if inside.size else 0.0
        best = r.min()
        rr[u] = 1.0 / (best + 1.0) if np.isfinite(best) else 0.0
    return {f"HR@{k}": hr, f"Recall@{k}": rec, f"NDCG@{k}": nd, "MRR": rr}


def per_user_metrics(
    target_ranks: Sequence[Sequence[float]], ks: Iterable[int] = (5, 10, 20)
) -> dict[str, np.ndarray]:
    """Every metric at every K, per user, keyed ``"HR@10"``, ``"NDCG@10"``, ..., ``"MRR"``."""
    out: dict[str, np.ndarray] = {}
    single = all(len(r) == 1 for r in target_ranks)
    for k in ks:
        if single:
            flat = np.asarray([r[0] for r in target_ranks], dtype=np.float64)
            out[f"HR@{k}"] = hit_rate(flat, k)
            out[f"Recall@{k}"] = recall(flat, k)
            out[f"NDCG@{k}"] = ndcg(flat, k)
            out["MRR"] = mrr(flat)
        else:
            out.update(multi_target_metrics(target_ranks, k))
    if not out:
        out["MRR"] = mrr(np.asarray([min(r) for r in target_ranks], dtype=np.float64))
    return out


# -- list-level metrics -----------------------------------------------------------------------


def catalog_coverage(top_lists: Sequence[Sequence[int]], n_items: int, k: int) -> float:
    """Share of the catalog that appears in at least one user's top ``k``."""
    if n_items <= 0:
        return 0.0
    seen: set[int] = set()
    for rows in top_lists:
        seen.update(int(r) for r in list(rows)[:k])
    return len(seen) / n_items


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Per item, the percentile (0-100) of its interaction count in the catalog.

    Ties share the mean of their positions, so the most popular item scores near 100 and every
    never-seen item shares one low value.
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.size
    if n == 0:
        return np.zeros(0)
    order = np.argsort(c, kind="stable")
    sorted_c = c[order]
    # average rank of each tie group
    _, first, group_size = np.unique(sorted_c, return_index=True, return_counts=True)
    avg_pos = first + (group_size - 1) / 2.0
    group_of = np.searchsorted(np.unique(sorted_c), c)
    pos = avg_pos[group_of]
    return 100.0 * pos / max(n - 1, 1)


def mean_popularity_percentile(
    top_lists: Sequence[Sequence[int]], percentiles: np.ndarray, k: int
) -> float:
    """Mean popularity percentile of the items in every user's top ``k`` (lower = more niche)."""
    values = [percentiles[int(r)] for rows in top_lists for r in list(rows)[:k]]
    return float(np.mean(values)) if values else float("nan")


# -- bootstrap --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    """A point estimate with a percentile bootstrap interval."""

    mean: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` over the same users: absolute difference and relative lift ``a/b - 1``."""

    diff: Interval
    relative: Interval
    mean_a: float
    mean_b: float
    p_not_better: float  # share of resamples where mean(a) <= mean(b)

    def to_dict(self) -> dict[str, object]:
        return {
            "mean_a": self.mean_a,
            "mean_b": self.mean_b,
            "diff": self.diff.to_dict(),
            "relative": self.relative.to_dict(),
            "p_not_better": self.p_not_better,
        }


def _resample_means(columns: Sequence[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Means of each column over the same ``n_resamples`` bootstrap resamples of rows."""
    n = columns[0].size
    rng = np.random.default_rng(seed)
    outs = [np.empty(n_resamples) for _ in columns]
    per_chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    done = 0
    while done < n_resamples:
        m = min(per_chunk, n_resamples - done)
        idx = rng.integers(0, n, size=(m, n))
        for col, out in zip(columns, outs, strict=True):
            out[done : done + m] = col[idx].mean(axis=1)
        done += m
    return outs


def _interval(point: float, samples: np.ndarray, confidence: float) -> Interval:
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(samples, [tail, 100.0 - tail])
    return Interval(float(point), float(low), float(high))


def bootstrap_ci(
    values: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The mean of ``values`` with a percentile bootstrap interval (users resampled)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    (means,) = _resample_means([v], n_resamples, seed)
    return _interval(float(v.mean()), means, confidence)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """Interval of ``mean(a) - mean(b)`` and of ``mean(a)/mean(b) - 1``, users paired.

    ``a[i]`` and ``b[i]`` must be the same user's metric under the two systems.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        nan = Interval(float("nan"), float("nan"), float("nan"))
        return PairedDifference(nan, nan, float("nan"), float("nan"), float("nan"))
    ma, mb = _resample_means([a, b], n_resamples, seed)
    diff = ma - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(mb > 0, ma / mb - 1.0, np.nan)
    rel = rel[np.isfinite(rel)]
    point_rel = float(a.mean() / b.mean() - 1.0) if b.mean() > 0 else float("nan")
    rel_iv = (
        _interval(point_rel, rel, confidence)
        if rel.size
        else Interval(point_rel, float("nan"), float("nan"))
    )
    return PairedDifference(
        diff=_interval(float(a.mean() - b.mean()), diff, confidence),
        relative=rel_iv,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        p_not_better=float((diff <= 0).mean()),
    )


def summarise(
    per_user: Mapping[str, np.ndarray],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """:func:`bootstrap_ci` of every metric column."""
    return {
        name: bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        for name, values in per_user.items()
    }
