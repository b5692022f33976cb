"""Deterministic A/B assignment by hashing (the service's and the offline A/B's)."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from portrait.errors import InvalidField
from portrait.experiments import Experiment, bucket

USERS = [f"user-{i}" for i in range(20_000)]


def test_bucket_is_sha256_of_experiment_and_user() -> None:
    digest = hashlib.sha256(b"ranker-v2:alice").digest()
    assert bucket("ranker-v2", "alice", 100) == int.from_bytes(digest[:8], "big") % 100


def test_assignment_is_stable() -> None:
    exp = Experiment.from_config({"name": "ranker-v2", "split": {"control": 50, "treatment": 50}})
    first = exp.assign_all(USERS[:500])
    again = Experiment("ranker-v2", (("control", 50), ("treatment", 50))).assign_all(USERS[:500])
    assert first == again
    # a fixed, independently computed example: the bucket decides the variant
    b = int.from_bytes(hashlib.sha256(b"ranker-v2:user-7").digest()[:8], "big") % 100
    assert exp.assign("user-7") == ("control" if b < 50 else "treatment")


def test_even_split_proportions() -> None:
    exp = Experiment.from_config({"name": "exp-1", "split": {"control": 50, "treatment": 50}})
    counts = Counter(exp.assign_all(USERS).values())
    assert set(counts) == {"control", "treatment"}
    assert abs(counts["control"] / len(USERS) - 0.5) < 0.02


def test_uneven_split_proportions_follow_the_config() -> None:
    exp = Experiment.from_config({"name": "exp-2", "split": {"a": 1, "b": 1, "c": 2}})
    counts = Counter(exp.assign_all(USERS).values())
    n = len(USERS)
    assert abs(counts["a"] / n - 0.25) < 0.02
    assert abs(counts["b"] / n - 0.25) < 0.02
    assert abs(counts["c"] / n - 0.50) < 0.02
    only = Experiment.from_config({"name": "exp-3", "split": {"control": 0, "treatment": 10}})
    assert set(only.assign_all(USERS[:1000]).values()) == {"treatment"}


def test_experiments_are_independent() -> None:
    a = Experiment.from_config({"name": "exp-a", "split": {"x": 50, "y": 50}}).assign_all(USERS)
    b = Experiment.from_config({"name": "exp-b", "split": {"x": 50, "y": 50}}).assign_all(USERS)
    agree = sum(a[u] == b[u] for u in USERS) / len(USERS)
    assert 0.47 < agree < 0.53


@pytest.mark.parametrize(
    "config",
    [
        {"split": {"a": 1}},
        {"name": "x"},
        {"name": "x", "split": {}},
        {"name": "x", "split": {"a": -1, "b": 2}},
        {"name": "x", "split": {"a": 0.5, "b": 0.5}},
        {"name": "x", "split": {"a": 0, "b": 0}},
        {"name": "", "split": {"a": 1}},
        {"name": "x", "split": [["a", 1]]},
    ],
)
def test_bad_configs_are_refused(config: dict) -> None:
    with pytest.raises(InvalidField):
        Experiment.from_config(config)
