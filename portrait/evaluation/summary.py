"""What a test run amounts to: intervals, paired comparisons, curves, history buckets, goals.

Pure: numpy and the standard library only, no I/O. :func:`summarise_run` turns a
:class:`~portrait.evaluation.runner.RunResult` into the JSON-ready summary that the offline
report, plots and ``metrics.json`` are written from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from portrait.evaluation.goals import GOAL_METRIC, goal
from portrait.evaluation.metrics import paired_bootstrap, per_user_metrics, summarise
from portrait.evaluation.roster import BASELINES, ISSUE_BASELINES
from portrait.evaluation.runner import RunResult

KS = (5, 10, 20)
CURVE_KS = tuple(range(1, 51))
# lower edges of the history-length buckets (items in the user's visible history)
HISTORY_BUCKETS = (3, 10, 20, 50, 100, 200, 500)
COMPARED_METRICS = ("HR@10", "NDCG@10", "MRR", "NDCG@20")


def curves(ranks: Sequence[Sequence[float]], ks: Sequence[int]) -> dict[str, list[float]]:
    """Mean HR@K and NDCG@K for every K in ``ks`` (one list each, in the order of ``ks``)."""
    m = per_user_metrics(ranks, ks)
    return {
        "HR": [float(m[f"HR@{k}"].mean()) for k in ks],
        "NDCG": [float(m[f"NDCG@{k}"].mean()) for k in ks],
    }


def bucket_label(lo: int, hi: int | None) -> str:
    """``"10-19"`` for ``[10, 20)``, ``"500+"`` for an open top bucket."""
    return f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"


def history_buckets(result: RunResult, metric: str = GOAL_METRIC) -> dict[str, Any]:
    """Mean ``metric`` per system for users grouped by their visible history length.

    Buckets start at :data:`HISTORY_BUCKETS`' edges (plus ``0-2`` when some user has fewer
    items than the first edge); empty buckets are left out.
    """
    edges = list(HISTORY_BUCKETS)
    bounds: list[tuple[int, int | None]] = list(zip(edges, edges[1:] + [None], strict=True))
    h = result.history_lengths
    if h.size and h.min() < edges[0]:
        bounds.insert(0, (0, edges[0]))
    out: dict[str, Any] = {"metric": metric, "buckets": []}
    metrics = result.metrics(KS)
    for lo, hi in bounds:
        mask = (h >= lo) & ((h < hi) if hi is not None else True)
        n = int(mask.sum())
        if n == 0:
            continue
        out["buckets"].append(
            {
                "label": bucket_label(lo, hi),
                "users": n,
                "values": {s: float(m[metric][mask].mean()) for s, m in metrics.items()},
            }
        )
    return out


def summarise_run(
    result: RunResult, reference: str, resamples: int, seed: int,
    pairs: Mapping[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """The JSON-ready summary of a test run.

    Args:
        result: the run of every system over the test split.
        reference: the system compared against every other (tuned Portrait).
        resamples: bootstrap resamples for every interval.
        seed: bootstrap seed.
        pairs: further paired comparisons by label, ``(a, b)`` for ``a - b`` (the fine-tuned
            encoder's systems against the base encoder's); pairs naming an absent system
            are left out.

    Returns:
        Per system its metric intervals, list metrics, run time and HR/NDCG curves; the best
        baseline; paired comparisons of ``reference`` against every other system; the goal
        against all baselines (``goal``) and against the issue's (``goal_issue_baselines``);
        the history buckets; counts of cases and targets.
    """
    metrics = result.metrics(KS)
    lists = result.list_metrics(KS)
    systems: dict[str, Any] = {}
    for name, cols in metrics.items():
        systems[name] = {
            "metrics": {m: iv.to_dict() for m, iv in summarise(cols, resamples, seed).items()},
            "list": lists[name],
            "seconds": result.systems[name].seconds,
            "curves": curves(result.systems[name].ranks, CURVE_KS),
        }
    baselines = [b for b in BASELINES if b in metrics]
    best = max(baselines, key=lambda b: metrics[b][GOAL_METRIC].mean()) if baselines else None
    comparisons: dict[str, Any] = {}
    if reference in metrics:
        for other in metrics:
            if other == reference:
                continue
            comparisons[other] = {
                m: paired_bootstrap(
                    metrics[reference][m], metrics[other][m], resamples, seed=seed
                ).to_dict()
                for m in COMPARED_METRICS
                if m in metrics[other]
            }
    extra = {
        label: {m: paired_bootstrap(metrics[a][m], metrics[b][m], resamples, seed=seed).to_dict()
                for m in COMPARED_METRICS if m in metrics[a] and m in metrics[b]}
        for label, (a, b) in (pairs or {}).items() if a in metrics and b in metrics
    }
    return {
        "cases": len(result.cases),
        "n_items": result.n_items,
        "targets": int(sum(len(c.targets) for c in result.cases)),
        "targets_outside_catalog": result.targets_outside_catalog,
        "systems": systems,
        "best_baseline": best,
        "comparisons_vs": reference,
        "comparisons": comparisons,
        "pairs": {label: {"a": a, "b": b, **extra[label]}
                  for label, (a, b) in (pairs or {}).items() if label in extra},
        "goal": goal(comparisons, metrics, BASELINES),
        "goal_issue_baselines": goal(comparisons, metrics, ISSUE_BASELINES),
        "history_buckets": history_buckets(result),
        "run_seconds": result.seconds,
    }
