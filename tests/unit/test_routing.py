"""Rendezvous hashing: stable, balanced, minimal movement."""

from __future__ import annotations

from collections import Counter

from portrait.routing import owner, owner_index

USERS = [f"user-{i}" for i in range(4000)]


def test_same_answer_everywhere_and_index_agrees() -> None:
    shards = ["shard-0", "shard-1", "shard-2"]
    for u in USERS[:200]:
        assert owner(u, shards) == shards[owner_index(u, shards)]
        assert owner(u, list(reversed(shards))) == owner(u, shards)


def test_balanced_within_ten_percent() -> None:
    shards = [f"shard-{i}" for i in range(4)]
    counts = Counter(owner(u, shards) for u in USERS)
    assert all(abs(c - 1000) < 100 for c in counts.values()), counts


def test_adding_a_shard_moves_only_its_share() -> None:
    before = [f"shard-{i}" for i in range(4)]
    after = before + ["shard-4"]
    moved = [u for u in USERS if owner(u, before) != owner(u, after)]
    assert all(owner(u, after) == "shard-4" for u in moved)
    assert 0.1 < len(moved) / len(USERS) < 0.3
