"""A/B assignment by hashing, and offline A/B comparison of two configurations.

Pure: numpy and the standard library only, no I/O.

Assignment: ``sha256(f"{experiment}:{user_id}")``, its first 8 bytes as an unsigned big-endian
integer, modulo the sum of the split's weights, picks the bucket; variants own consecutive
ranges of buckets in the order the split lists them. The same user in the same experiment always
gets the same variant, in any process, on any machine; another experiment name reshuffles users
independently. Weights are integers (``{"control": 50, "treatment": 50}``,
``{"a": 1, "b": 1, "c": 2}``).

Offline A/B: replay the same users through both configurations (every user sees both, the
strongest possible pairing) and report per-metric differences with paired bootstrap intervals
(:func:`compare`). :func:`compare_assigned` gives the unpaired view an online test would have
(each user only in the bucket they are assigned to), useful to size an online experiment.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from portrait.errors import InvalidField
from portrait.evaluation.metrics import (
    DEFAULT_RESAMPLES,
    Interval,
    PairedDifference,
    bootstrap_ci,
    paired_bootstrap,
)


def bucket(experiment: str, user_id: str, buckets: int) -> int:
    """The user's bucket in ``[0, buckets)`` for ``experiment``."""
    if buckets < 1:
        raise InvalidField("buckets", "must be at least 1")
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % buckets


@dataclass(frozen=True)
class Experiment:
    """A named experiment with integer weights per variant (order matters for the ranges)."""

    name: str
    split: tuple[tuple[str, int], ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InvalidField("name", "must be a non-empty string")
        if not self.split:
            raise InvalidField("split", "needs at least one variant")
        seen = set()
        for variant, weight in self.split:
            if not isinstance(variant, str) or not variant or variant in seen:
                raise InvalidField("split", f"bad or repeated variant name {variant!r}")
            seen.add(variant)
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise InvalidField(f"split.{variant}", "weight must be a non-negative integer")
        if sum(w for _, w in self.split) <= 0:
            raise InvalidField("split", "weights must not all be zero")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Experiment:
        """From ``{"name": "ranker-v2", "split": {"control": 50, "treatment": 50}}``."""
        if "name" not in config or "split" not in config:
            raise InvalidField("experiment", "needs 'name' and 'split'")
        split = config["split"]
        if not isinstance(split, Mapping):
            raise InvalidField("split", "must map variant names to integer weights")
        return cls(str(config["name"]), tuple((str(k), v) for k, v in split.items()))

    @property
    def total(self) -> int:
        return sum(w for _, w in self.split)

    def assign(self, user_id: str) -> str:
        """The variant of ``user_id``; stable across processes and runs."""
        b = bucket(self.name, user_id, self.total)
        for variant, weight in self.split:
            if b < weight:
                return variant
            b -= weight
        raise AssertionError("unreachable: bucket beyond the weights")  # pragma: no cover

    def assign_all(self, user_ids: Sequence[str]) -> dict[str, str]:
        return {u: self.assign(u) for u in user_ids}


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
