"""The shard autoscaler's policy: scale on the busiest signal, hold between the thresholds."""

from __future__ import annotations

import pytest

from portrait.scaling import ShardLoad, ShardScaling, desired_shards

POLICY = ShardScaling(min_shards=2, max_shards=8, target_active_users=1000, target_queue=50)


def loads(users: int, queue: int, shards: int) -> list[ShardLoad]:
    return [ShardLoad(users // shards, queue // shards, 0) for _ in range(shards)]


def test_scales_out_on_users_or_on_waiting_work() -> None:
    assert desired_shards(loads(2000, 0, 2), POLICY) == 2  # at the target: hold
    assert desired_shards(loads(3500, 0, 2), POLICY) == 4  # 3.5 shards' worth of users
    assert desired_shards(loads(100, 260, 2), POLICY) == 6  # the event loop is behind


def test_holds_between_the_thresholds_and_scales_in_clearly_below() -> None:
    assert desired_shards(loads(2600, 0, 4), POLICY) == 4  # 2.6 < 4 but not under 3 x 0.5
    assert desired_shards(loads(1000, 0, 4), POLICY) == 2  # would sit under half of 3
    assert desired_shards(loads(0, 0, 4), POLICY) == 2  # never under the minimum


def test_bounds() -> None:
    assert desired_shards(loads(1_000_000, 0, 2), POLICY) == 8
    with pytest.raises(ValueError):
        ShardScaling(min_shards=3, max_shards=2)
    with pytest.raises(ValueError):
        ShardScaling(target_active_users=0)
