"""The evaluation's goal: does tuned Portrait beat the best baseline clearly enough?

Pure: the standard library and numpy only, no I/O.

The goal is met when, against the baseline with the best mean NDCG@10 on the test split,
Portrait's mean NDCG@10 is at least 10% higher (relative lift) *and* the 95% paired bootstrap
interval of the difference lies above zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

GOAL_METRIC = "NDCG@10"
MIN_RELATIVE_LIFT = 0.10


def goal(
    comparisons: Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Mapping[str, np.ndarray]],
    baselines: Sequence[str],
) -> dict[str, Any] | None:
    """The goal's verdict against the best of ``baselines``.

    Args:
        comparisons: per other system, per metric, the paired comparison of the reference
            against it (``PairedDifference.to_dict()``: ``diff`` and ``relative`` intervals).
        metrics: per system, per metric, the per-user values (picks the best baseline).
        baselines: the baselines to consider; those without a comparison are skipped.

    Returns:
        The verdict and its numbers, or ``None`` when no baseline was compared.
    """
    present = [b for b in baselines if b in comparisons]
    if not present:
        return None
    top = max(present, key=lambda b: metrics[b][GOAL_METRIC].mean())
    c = comparisons[top][GOAL_METRIC]
    lift_ok = c["relative"]["mean"] >= MIN_RELATIVE_LIFT
    above_zero = c["diff"]["low"] > 0
    return {
        "baselines_considered": list(present),
        "best_baseline": top,
        "relative_lift": c["relative"]["mean"],
        "relative_ci": [c["relative"]["low"], c["relative"]["high"]],
        "diff": c["diff"]["mean"],
        "diff_ci": [c["diff"]["low"], c["diff"]["high"]],
        "lift_at_least_10pct": lift_ok,
        "diff_ci_above_zero": above_zero,
        "met": lift_ok and above_zero,
    }
