"""Coverage's interval in the experiment report contains its own estimate.

A distinct-item count over a bootstrap resample of users can only shrink (a resample misses
about a third of the lists), so the plain percentile interval lay below the estimate: an A/B
run of 300 users reported control coverage 0.00606 with [0.00410, 0.00595].
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from portrait.experiment_stats import coverage

served_lists = st.lists(st.lists(st.integers(0, 400), min_size=0, max_size=12),
                        min_size=1, max_size=60)


@given(lists=served_lists, spare=st.integers(0, 1000), seed=st.integers(0, 2**16))
@settings(max_examples=300, deadline=None)
def test_the_estimate_always_lies_within_its_interval(
    lists: list[list[int]], spare: int, seed: int
) -> None:
    catalog_size = 401 + spare
    estimate, reps = coverage(lists, catalog_size, resamples=50, seed=seed)
    assert estimate.low <= estimate.value <= estimate.high, estimate
    assert 0.0 <= estimate.low and estimate.high <= 1.0
    assert ((reps >= 0) & (reps <= 1)).all()


def test_an_ab_run_of_users_gets_an_interval_around_its_coverage() -> None:
    # Like the measured run: 150 users a variant, each served 10 of a popular few thousand.
    rng = random.Random(3)
    lists = [[int(rng.paretovariate(1.2)) for _ in range(10)] for _ in range(150)]
    estimate, _ = coverage(lists, 9742)
    assert estimate.low < estimate.value < estimate.high
    # The interval keeps the spread of the resampled counts (not a zero-width point).
    assert estimate.high - estimate.low > 0.1 * estimate.value


def test_full_coverage_stays_within_the_catalog() -> None:
    estimate, reps = coverage([[0, 1], [2, 3], [4]], 5)
    assert estimate.value == 1.0 and estimate.high == 1.0 and reps.max() <= 1.0
