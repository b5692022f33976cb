"""Hand-computed cases for every evaluation metric, and the bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portrait.evaluation.metrics import (
    UNRANKED,
    bootstrap_ci,
    catalog_coverage,
    hit_rate,
    mean_popularity_percentile,
    mrr,
    multi_target_metrics,
    ndcg,
    paired_bootstrap,
    per_user_metrics,
    popularity_percentiles,
    recall,
)

RANKS = np.array([0.0, 2.0, 9.0, 10.0, UNRANKED])  # 0-based ranks of the held-out item


def test_hit_rate_at_10() -> None:
    assert hit_rate(RANKS, 10).tolist() == [1, 1, 1, 0, 0]
    assert hit_rate(RANKS, 1).tolist() == [1, 0, 0, 0, 0]


def test_recall_of_one_target_is_hit_rate() -> None:
    assert recall(RANKS, 10).tolist() == hit_rate(RANKS, 10).tolist()


def test_ndcg_rank_three_is_one_over_log2_of_four() -> None:
    # 1-based rank 3 (0-based 2): 1/log2(3 + 1) = 0.5
    got = ndcg(RANKS, 10)
    assert got[0] == 1.0
    assert got[1] == pytest.approx(1.0 / math.log2(4)) == pytest.approx(0.5)
    assert got[2] == pytest.approx(1.0 / math.log2(11))
    assert got[3] == 0.0  # rank 11 is outside the top 10
    assert got[4] == 0.0


def test_mrr_uses_the_full_ranking() -> None:
    assert mrr(RANKS).tolist() == pytest.approx([1.0, 1 / 3, 1 / 10, 1 / 11, 0.0])


def test_multi_target_metrics_by_hand() -> None:
    # targets at ranks 0 and 3, K = 2: one hit of two
    m = multi_target_metrics([(0.0, 3.0)], 2)
    assert m["HR@2"][0] == 1.0
    assert m["Recall@2"][0] == 0.5
    idcg = 1.0 + 1.0 / math.log2(3)
    assert m["NDCG@2"][0] == pytest.approx(1.0 / idcg)
    assert m["MRR"][0] == 1.0
    # targets at ranks 1 and 2, K = 5: both hit; NDCG = (1/log2 3 + 1/log2 4) / (1 + 1/log2 3)
    m = multi_target_metrics([(1.0, 2.0)], 5)
    assert m["Recall@5"][0] == 1.0
    assert m["NDCG@5"][0] == pytest.approx((1 / math.log2(3) + 0.5) / (1 + 1 / math.log2(3)))
    assert m["MRR"][0] == pytest.approx(0.5)
    # an unranked target is a miss
    m = multi_target_metrics([(UNRANKED,)], 5)
    assert m["HR@5"][0] == 0.0 and m["MRR"][0] == 0.0


def test_multi_target_with_one_target_equals_single_definitions() -> None:
    for k in (1, 5, 10):
        multi = multi_target_metrics([(r,) for r in RANKS], k)
        assert multi[f"HR@{k}"].tolist() == hit_rate(RANKS, k).tolist()
        assert multi[f"NDCG@{k}"] == pytest.approx(ndcg(RANKS, k))
        assert multi["MRR"] == pytest.approx(mrr(RANKS))


def test_per_user_metrics_keys_and_values() -> None:
    m = per_user_metrics([(r,) for r in RANKS], (5, 10))
    assert set(m) == {"HR@5", "Recall@5", "NDCG@5", "HR@10", "Recall@10", "NDCG@10", "MRR"}
    assert m["HR@5"].tolist() == [1, 1, 0, 0, 0]
    mixed = per_user_metrics([(0.0,), (1.0, 30.0)], (10,))
    assert mixed["Recall@10"].tolist() == [1.0, 0.5]


def test_catalog_coverage() -> None:
    lists = [[0, 1, 5], [1, 2, 6]]
    assert catalog_coverage(lists, 10, 2) == pytest.approx(0.3)  # {0, 1, 2}
    assert catalog_coverage(lists, 10, 1) == pytest.approx(0.2)  # {0, 1}
    assert catalog_coverage(lists, 10, 3) == pytest.approx(0.5)


def test_popularity_percentiles_and_their_mean() -> None:
    assert popularity_percentiles(np.array([0, 5, 10])).tolist() == [0.0, 50.0, 100.0]
    # ties share their mean position: [1, 1] occupy positions 0 and 1 -> 0.5 of 2 -> 25
    assert popularity_percentiles(np.array([1, 1, 3])).tolist() == [25.0, 25.0, 100.0]
    pct = popularity_percentiles(np.array([0, 5, 10]))
    assert mean_popularity_percentile([[2, 1], [0]], pct, 2) == pytest.approx(50.0)
    assert mean_popularity_percentile([[2, 1], [0]], pct, 1) == pytest.approx(50.0)  # (100+0)/2


def test_bootstrap_ci_contains_the_mean_and_is_seeded() -> None:
    values = np.random.default_rng(1).binomial(1, 0.3, size=400).astype(float)
    ci = bootstrap_ci(values, n_resamples=1000, seed=3)
    assert ci.low < values.mean() < ci.high
    assert ci.mean == pytest.approx(values.mean())
    assert ci.high - ci.low < 0.15
    assert bootstrap_ci(values, n_resamples=1000, seed=3) == ci
    constant = bootstrap_ci(np.full(50, 0.25), n_resamples=200)
    assert constant.low == constant.high == constant.mean == 0.25


def test_paired_bootstrap_of_a_constant_shift() -> None:
    b = np.random.default_rng(2).uniform(size=300)
    a = b + 0.1
    d = paired_bootstrap(a, b, n_resamples=500)
    assert d.diff.mean == pytest.approx(0.1)
    assert d.diff.low == pytest.approx(0.1) and d.diff.high == pytest.approx(0.1)
    assert d.relative.mean == pytest.approx(a.mean() / b.mean() - 1)
    assert d.relative.low <= d.relative.mean <= d.relative.high
    assert d.p_not_better == 0.0


def test_paired_interval_is_tighter_than_unpaired_for_correlated_systems() -> None:
    rng = np.random.default_rng(5)
    user_difficulty = rng.uniform(0, 1, 500)
    b = (user_difficulty > 0.5).astype(float)
    a = b.copy()
    a[rng.choice(np.flatnonzero(b == 0), 25, replace=False)] = 1.0  # a wins on 25 users
    d = paired_bootstrap(a, b, n_resamples=1000, seed=0)
    assert d.diff.low > 0  # the paired interval sees that a never loses
    ca, cb = bootstrap_ci(a, 1000, seed=0), bootstrap_ci(b, 1000, seed=0)
    assert ca.low < cb.high  # the separate intervals overlap


def test_paired_bootstrap_rejects_unpaired_shapes() -> None:
    with pytest.raises(ValueError):
        paired_bootstrap(np.zeros(3), np.zeros(4))
