"""Offline A/B comparison of two configurations.

Pure: numpy and the standard library only, no I/O. Users are assigned to variants by
:class:`portrait.experiments.Experiment`, the assignment the service uses.

Offline A/B: replay the same users through both configurations (every user sees both, the
strongest possible pairing) and report per-metric differences with paired bootstrap intervals
(:func:`compare`). :func:`compare_assigned` gives the unpaired view an online test would have
(each user only in the bucket they are assigned to), useful to size an online experiment.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from portrait.evaluation.metrics import (
    DEFAULT_RESAMPLES,
    Interval,
    PairedDifference,
    bootstrap_ci,
    paired_bootstrap,
)
from portrait.experiments import Experiment


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    a: Interval
    b: Interval
    paired: PairedDifference

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "a": self.a.to_dict(), "b": self.b.to_dict(),
                "paired": self.paired.to_dict()}


def compare(
    metrics_a: Mapping[str, np.ndarray],
    metrics_b: Mapping[str, np.ndarray],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> list[MetricComparison]:
    """Per metric: each system's mean and interval, and the paired interval of ``a - b``.

    The arrays must be per-user values over the same users in the same order (two runs of
    one split).
    """
    out = []
    for name in metrics_a:
        if name not in metrics_b:
            continue
        a, b = np.asarray(metrics_a[name]), np.asarray(metrics_b[name])
        out.append(
            MetricComparison(
                name,
                bootstrap_ci(a, n_resamples, seed=seed),
                bootstrap_ci(b, n_resamples, seed=seed),
                paired_bootstrap(a, b, n_resamples, seed=seed),
            )
        )
    return out


def compare_assigned(
    user_ids: Sequence[str],
    metrics_a: Mapping[str, np.ndarray],
    metrics_b: Mapping[str, np.ndarray],
    experiment: Experiment,
    variant_a: str,
    variant_b: str,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """The online view: users in bucket ``variant_a`` count for ``a`` only, and likewise ``b``.

    Returns the counts and, per metric, the difference of means with an unpaired bootstrap
    interval (the two groups resampled independently).
    """
    assigned = experiment.assign_all(user_ids)
    ia = np.asarray([i for i, u in enumerate(user_ids) if assigned[u] == variant_a], dtype=np.int64)
    ib = np.asarray([i for i, u in enumerate(user_ids) if assigned[u] == variant_b], dtype=np.int64)
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"users_a": int(ia.size), "users_b": int(ib.size), "metrics": {}}
    if ia.size == 0 or ib.size == 0:
        return out
    for name in metrics_a:
        if name not in metrics_b:
            continue
        a = np.asarray(metrics_a[name])[ia]
        b = np.asarray(metrics_b[name])[ib]
        ra = a[rng.integers(0, a.size, (n_resamples, a.size))].mean(axis=1)
        rb = b[rng.integers(0, b.size, (n_resamples, b.size))].mean(axis=1)
        low, high = np.percentile(ra - rb, [2.5, 97.5])
        out["metrics"][name] = {
            "mean_a": float(a.mean()),
            "mean_b": float(b.mean()),
            "diff": {"mean": float(a.mean() - b.mean()), "low": float(low), "high": float(high)},
        }
    return out
