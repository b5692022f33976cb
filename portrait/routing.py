"""User -> shard placement by rendezvous (highest-random-weight) hashing.

Every caller computes the same owner from the user id and the shard names alone, with no
table to keep in sync; when a shard is added or removed only the users it gains or loses move
(about 1/N of them), unlike ``hash(user) % N`` which reshuffles nearly everyone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def shard_names(count: int) -> tuple[str, ...]:
    """The names of a fleet of ``count`` shards. A resize keeps the first names, so that only
    the users of added or removed shards move."""
    return tuple(f"portrait-shard-{i}" for i in range(count))


def _weight(shard: str, user_id: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(user_id: str, shards: Sequence[str]) -> str:
    """The shard that owns ``user_id``; ties (astronomically rare) go to the first listed."""
    if not shards:
        raise ValueError("no shards to route to")
    return max(shards, key=lambda s: _weight(s, user_id))


def owner_index(user_id: str, shards: Sequence[str]) -> int:
    """Index in ``shards`` of :func:`owner`."""
    best, best_w = 0, -1
    for i, shard in enumerate(shards):
        w = _weight(shard, user_id)
        if w > best_w:
            best, best_w = i, w
    return best


@dataclass(frozen=True)
class Topology:
    """Which shards exist, numbered by ``epoch``: every change of the shard set is a new
    epoch, and a shard refuses users it does not own under the newest epoch it was told of.
    Epoch 0 is "not told yet" (a shard accepts everyone)."""

    epoch: int
    names: tuple[str, ...]

    def owner(self, user_id: str) -> str:
        return owner(user_id, self.names)

    def moved_share(self, other: Topology, users: Iterable[str]) -> float:
        """The share of ``users`` whose owner differs between the two topologies."""
        ids = list(users)
        if not ids:
            return 0.0
        return sum(self.owner(u) != other.owner(u) for u in ids) / len(ids)
