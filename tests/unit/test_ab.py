"""The offline A/B comparison: paired differences, and the unpaired view as assigned."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from portrait.evaluation.ab import compare, compare_assigned
from portrait.experiments import Experiment

USERS = [f"user-{i}" for i in range(20_000)]


def test_compare_reports_paired_differences() -> None:
    rng = np.random.default_rng(0)
    b = rng.binomial(1, 0.2, 300).astype(float)
    a = np.maximum(b, rng.binomial(1, 0.1, 300))  # a is never worse
    out = compare({"HR@10": a}, {"HR@10": b, "other": b}, n_resamples=500)
    assert [c.metric for c in out] == ["HR@10"]
    c = out[0]
    assert c.paired.diff.mean == pytest.approx(a.mean() - b.mean())
    assert c.paired.diff.low > 0
    same = compare({"m": b}, {"m": b}, n_resamples=200)[0]
    assert same.paired.diff.low == same.paired.diff.high == 0.0


def test_compare_assigned_splits_users_by_bucket() -> None:
    users = USERS[:2000]
    exp = Experiment.from_config({"name": "online", "split": {"control": 50, "treatment": 50}})
    a = {"m": np.ones(len(users))}
    b = {"m": np.zeros(len(users))}
    out = compare_assigned(users, a, b, exp, "control", "treatment", n_resamples=200)
    assigned = Counter(exp.assign_all(users).values())
    assert out["users_a"] == assigned["control"] and out["users_b"] == assigned["treatment"]
    assert out["metrics"]["m"]["diff"]["mean"] == 1.0
