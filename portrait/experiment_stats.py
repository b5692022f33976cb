"""Confidence intervals and tests for online experiment reports.

Pure: numpy and the standard library only. All intervals are two-sided at 95% unless told.

* Rates (click-through, conversion, interleaving preference): Wilson score intervals, which
  stay inside [0, 1] and behave at small counts and rates near 0, where the normal
  approximation does not.
* A difference of two rates: Newcombe's hybrid score interval (his method 10), built from
  the two Wilson intervals; p-value from the pooled two-proportion z-test.
* Means of skewed per-impression values (reciprocal rank): percentile bootstrap, resampling
  impressions.
* Coverage (a count of distinct items): a bootstrap resample holds only ~63% of the distinct
  lists, so its count sits below the estimate in nearly every replicate; the replicates are
  shifted by that bias (their median moved onto the estimate) before the percentiles are
  read, so the interval measures the spread around the estimate and always contains it.
* Interleaving: the exact two-sided sign test on wins against losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
Z_POWER80 = 0.8416212335729143
DEFAULT_RESAMPLES = 1000


@dataclass(frozen=True, slots=True)
class Estimate:
    """A point estimate with its interval."""

    value: float
    low: float
    high: float

    def excludes(self, x: float = 0.0) -> bool:
        return not self.low <= x <= self.high

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "ci_low": self.low, "ci_high": self.high}


@dataclass(frozen=True, slots=True)
class Difference:
    """``treatment - control`` with its interval and a two-sided p-value."""

    estimate: Estimate
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        return {**self.estimate.to_dict(), "p_value": self.p_value}


def wilson(successes: int, n: int, z: float = Z95) -> Estimate:
    """The rate ``successes / n`` with its Wilson score interval ([0, 1] when ``n`` is 0)."""
    if n < 0 or not 0 <= successes <= max(n, 0):
        raise ValueError("need 0 <= successes <= n")
    if n == 0:
        return Estimate(0.0, 0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half))


def normal_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2))


def rate_difference(k_c: int, n_c: int, k_t: int, n_t: int, z: float = Z95) -> Difference:
    """``k_t/n_t - k_c/n_c`` (treatment minus control): Newcombe's hybrid score interval and
    the pooled two-proportion z-test."""
    c, t = wilson(k_c, n_c, z), wilson(k_t, n_t, z)
    d = t.value - c.value
    low = d - math.sqrt((t.value - t.low) ** 2 + (c.high - c.value) ** 2)
    high = d + math.sqrt((t.high - t.value) ** 2 + (c.value - c.low) ** 2)
    p = 1.0
    if n_c and n_t:
        pooled = (k_c + k_t) / (n_c + n_t)
        se = math.sqrt(pooled * (1 - pooled) * (1 / n_c + 1 / n_t))
        p = normal_p(d / se) if se > 0 else 1.0
    return Difference(Estimate(d, max(-1.0, low), min(1.0, high)), p)


def users_needed(p_c: float, p_t: float, z: float = Z95, z_power: float = Z_POWER80) -> int | None:
    """Users (impressions) per variant for a two-sided test at 95% to detect ``p_t - p_c``
    with 80% power; None when the two rates are equal."""
    d = p_t - p_c
    if d == 0:
        return None
    var = p_c * (1 - p_c) + p_t * (1 - p_t)
    return max(1, math.ceil((z + z_power) ** 2 * var / (d * d)))


def _resample_rows(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_mean(
    values: Sequence[float] | np.ndarray, *, resamples: int = DEFAULT_RESAMPLES, seed: int = 0
) -> Estimate:
    """The mean with a percentile bootstrap interval (``[0, 0]`` for no values)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return Estimate(0.0, 0.0, 0.0)
    means = x[_resample_rows(x.size, resamples, seed)].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(lo), float(hi))


def bootstrap_mean_difference(
    control: Sequence[float] | np.ndarray, treatment: Sequence[float] | np.ndarray, *,
    resamples: int = DEFAULT_RESAMPLES, seed: int = 0,
) -> Difference:
    """``mean(treatment) - mean(control)``, the two groups resampled independently; the
    p-value is the bootstrap's two-sided share of differences on the other side of 0."""
    c = np.asarray(control, dtype=np.float64)
    t = np.asarray(treatment, dtype=np.float64)
    if c.size == 0 or t.size == 0:  # nothing to compare (a report says so itself)
        return Difference(Estimate(0.0, 0.0, 0.0), 1.0)
    diffs = (t[_resample_rows(t.size, resamples, seed + 1)].mean(axis=1)
             - c[_resample_rows(c.size, resamples, seed)].mean(axis=1))
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    below = float(np.mean(diffs <= 0))
    p = min(1.0, 2 * min(below, 1 - below) + 1 / resamples)
    return Difference(Estimate(float(t.mean() - c.mean()), float(lo), float(hi)), p)


def _distinct_counts(lists: Sequence[Sequence[int]], resamples: int, seed: int) -> np.ndarray:
    """Distinct items over a bootstrap resample of the lists, per resample."""
    n = len(lists)
    out = np.zeros(resamples, dtype=np.float64)
    if n == 0:
        return out
    flat = np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])
    owner = np.repeat(np.arange(n), [len(x) for x in lists])
    chosen = np.zeros(n, dtype=bool)
    for r, rows in enumerate(_resample_rows(n, resamples, seed)):
        chosen[:] = False
        chosen[rows] = True  # a list drawn twice adds no new item
        out[r] = np.unique(flat[chosen[owner]]).size
    return out


def coverage(
    lists: Sequence[Sequence[int]], catalog_size: int, *, resamples: int = 200, seed: int = 0
) -> tuple[Estimate, np.ndarray]:
    """Distinct served items over the catalog size, with a bias-corrected bootstrap interval
    over the served lists (item ids as ints) that always contains the estimate; also the
    corrected bootstrap replicates, for differences."""
    if catalog_size <= 0 or not lists:
        return Estimate(0.0, 0.0, 0.0), np.zeros(resamples)
    point = np.unique(np.concatenate([np.asarray(x, dtype=np.int64) for x in lists])).size
    value = point / catalog_size
    raw = _distinct_counts(lists, resamples, seed) / catalog_size
    # Bias-corrected: the raw percentile interval lay wholly below the estimate (a resample
    # draws each list at most once and misses about a third of them). Centring the
    # replicates' median on the estimate keeps their spread and puts the estimate inside.
    reps = np.clip(raw + (value - float(np.median(raw))), 0.0, 1.0)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return Estimate(value, min(float(lo), value), max(float(hi), value)), reps


def replicate_difference(point: float, control: np.ndarray, treatment: np.ndarray) -> Difference:
    """A difference with its interval from two sets of independent bootstrap replicates."""
    diffs = treatment - control
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    below = float(np.mean(diffs <= 0))
    p = min(1.0, 2 * min(below, 1 - below) + 1 / max(1, diffs.size))
    return Difference(Estimate(point, float(lo), float(hi)), p)


def sign_test(wins: int, losses: int) -> float:
    """Exact two-sided sign-test p-value of ``wins`` against ``losses`` (ties left out)."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    # P(X <= k) for X ~ Binomial(n, 1/2), summed in log space (n may be large).
    log_half_n = -n * math.log(2)
    tail = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                        + log_half_n) for i in range(k + 1))
    return min(1.0, 2 * tail)
