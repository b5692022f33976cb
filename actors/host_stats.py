"""The counters of one user host, which its shard exports as metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HostStats:
    """Counters the shard exports as metrics (``serve.metrics`` names each one)."""

    activations: int = 0
    replayed_events: int = 0
    passivations: int = 0
    snapshots: int = 0
    snapshots_unreadable: int = 0
    events_unfoldable: int = 0
    ingested: int = 0
    duplicates: int = 0
    conflicts: int = 0
    erasures: int = 0
    handed_off: int = 0
    activation_seconds: float = 0.0
