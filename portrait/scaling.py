"""How many shards the measured load asks for.

Pure: the standard library only.

A shard holds its active users in memory and runs their calls on one event loop, so two
signals say it is full: active users (memory; each shard passivates beyond its budget, which
costs re-activations) and work waiting (events queued for the group commit plus calls in
flight: the event loop is behind). The policy sizes the fleet so that the busiest signal
sits at its target, and only moves when the change is clear: up when the load is above
``scale_up_at`` of what the current count can take, down when what is left would still be
under ``scale_down_at`` of the targets with one shard fewer. Between the two it holds, so a
load near a boundary does not flap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MAX_SHARDS = 1024


@dataclass(frozen=True)
class ShardLoad:
    """One shard's load now (from its stats)."""

    active_users: int
    pending_events: int
    calls_in_flight: int


@dataclass(frozen=True)
class ShardScaling:
    """Autoscaling bounds and targets (``PORTRAIT_SHARDS_MIN``/``_MAX``,
    ``PORTRAIT_SHARD_TARGET_ACTIVE_USERS``, ``PORTRAIT_SHARD_TARGET_QUEUE``)."""

    min_shards: int = 1
    max_shards: int = 8
    target_active_users: int = 50_000
    target_queue: int = 64
    scale_up_at: float = 1.0
    scale_down_at: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.min_shards <= self.max_shards <= MAX_SHARDS:
            raise ValueError("shard scaling needs 1 <= min <= max <= 1024")
        if self.target_active_users < 1 or self.target_queue < 1:
            raise ValueError("shard scaling targets must be positive")


def desired_shards(loads: Sequence[ShardLoad], policy: ShardScaling) -> int:
    """The shard count for ``loads`` (one per current shard) under ``policy``."""
    current = len(loads)
    users = sum(s.active_users for s in loads)
    queue = sum(s.pending_events + s.calls_in_flight for s in loads)
    need = max(users / policy.target_active_users, queue / policy.target_queue)
    want = current
    if need > current * policy.scale_up_at:
        want = math.ceil(need / policy.scale_up_at)
    elif current > 1 and need < (current - 1) * policy.scale_down_at:
        want = max(1, math.ceil(need / policy.scale_down_at))
    return max(policy.min_shards, min(policy.max_shards, want))


__all__ = ["MAX_SHARDS", "ShardLoad", "ShardScaling", "desired_shards"]
