"""The pure summaries of an offline run: roster, goal verdicts, curves, history buckets."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.evaluation.baseline_tuning import BaselineChoice
from portrait.evaluation.goals import goal
from portrait.evaluation.roster import (
    BASELINES,
    REFERENCE,
    best_validation_baseline,
    headline_systems,
)
from portrait.evaluation.runner import run
from portrait.evaluation.splits import leave_last_out
from portrait.evaluation.summary import (
    CURVE_KS,
    bucket_label,
    curves,
    history_buckets,
    summarise_run,
)
from tests.unit.test_eval_leakage import IDS, synthetic_events, systems_for


def comparison(diff: tuple[float, float, float], rel: tuple[float, float, float]) -> dict:
    keys = ("mean", "low", "high")
    return {"NDCG@10": {"diff": dict(zip(keys, diff, strict=True)),
                        "relative": dict(zip(keys, rel, strict=True))}}


def test_goal_is_judged_against_the_best_baseline_present() -> None:
    metrics = {"most-popular": {"NDCG@10": np.array([0.1, 0.1])},
               "item-knn": {"NDCG@10": np.array([0.2, 0.3])}}
    comparisons = {"most-popular": comparison((0.2, 0.1, 0.3), (2.0, 1.0, 3.0)),
                   "item-knn": comparison((0.03, 0.01, 0.05), (0.12, 0.04, 0.2))}
    verdict = goal(comparisons, metrics, BASELINES)
    assert verdict is not None
    assert verdict["best_baseline"] == "item-knn"
    assert verdict["baselines_considered"] == ["most-popular", "item-knn"]
    assert verdict["met"] and verdict["lift_at_least_10pct"] and verdict["diff_ci_above_zero"]


@pytest.mark.parametrize(("diff", "rel"), [((0.03, -0.01, 0.05), (0.2, -0.1, 0.4)),
                                          ((0.01, 0.001, 0.02), (0.05, 0.01, 0.1))])
def test_goal_needs_both_the_lift_and_an_interval_above_zero(diff: tuple, rel: tuple) -> None:
    metrics = {"item-knn": {"NDCG@10": np.array([0.2])}}
    verdict = goal({"item-knn": comparison(diff, rel)}, metrics, BASELINES)
    assert verdict is not None and not verdict["met"]


def test_no_goal_without_a_compared_baseline() -> None:
    assert goal({}, {}, BASELINES) is None


def test_headline_systems_keep_the_order_and_drop_ablations() -> None:
    names = ["portrait-no-tags", "item-knn", REFERENCE, "most-popular", "portrait-defaults"]
    assert headline_systems(names) == ["item-knn", REFERENCE, "most-popular"]


def test_best_validation_baseline_names_the_candidate() -> None:
    choice = BaselineChoice(20, 50, 2.0, 7.0, 520.0, {
        "knn:20": {"NDCG@10": 0.1}, "knnseq:50:2": {"NDCG@10": 0.3}, "recent:7": {"NDCG@10": 0.2},
        "ease:520": {"NDCG@10": 0.25},
    })
    assert best_validation_baseline(choice) == ("item-knn-seq", "knnseq:50:2")
    choice.validation["ease:520"]["NDCG@10"] = 0.4
    assert best_validation_baseline(choice) == ("ease", "ease:520")


def test_bucket_labels() -> None:
    assert bucket_label(10, 20) == "10-19"
    assert bucket_label(500, None) == "500+"


def test_curves_are_hit_rate_and_ndcg_by_cut_off() -> None:
    out = curves([(0.0,), (2.0,)], (1, 2, 3))  # 0-based ranks: first and third place
    assert out["HR"] == [0.5, 0.5, 1.0]
    assert out["NDCG"][0] == 0.5 and out["NDCG"][2] == pytest.approx((1 + 0.5) / 2)


def test_summary_of_a_real_run() -> None:
    _, test = leave_last_out(synthetic_events())
    result = run(test, systems_for(test), IDS)
    summary = summarise_run(result, REFERENCE, resamples=50, seed=0)
    assert summary["cases"] == len(test.cases)
    assert set(summary["systems"]) == set(result.systems)
    assert set(summary["comparisons"]) == set(result.systems) - {REFERENCE}
    for entry in summary["systems"].values():
        m = entry["metrics"]["NDCG@10"]
        assert m["low"] <= m["mean"] <= m["high"]
        assert len(entry["curves"]["HR"]) == len(CURVE_KS)
    assert summary["best_baseline"] in BASELINES
    assert summary["goal"]["best_baseline"] == summary["best_baseline"]
    buckets = history_buckets(result)["buckets"]
    assert sum(b["users"] for b in buckets) == len(test.cases)
    assert summary["history_buckets"]["buckets"] == buckets
