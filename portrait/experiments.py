"""A/B experiments: which variant a user is in, by hashing.

Pure: the standard library only, no I/O.

Assignment: ``sha256(f"{experiment}:{user_id}")``, its first 8 bytes as an unsigned big-endian
integer, modulo the sum of the split's weights, picks the bucket; variants own consecutive
ranges of buckets in the order the split lists them. The same user in the same experiment always
gets the same variant, in any process, on any machine; another experiment name reshuffles users
independently. Weights are integers (``{"control": 50, "treatment": 50}``,
``{"a": 1, "b": 1, "c": 2}``).

The service assigns users with it (:mod:`portrait.variants`); the offline comparison of two
configurations (:mod:`portrait.evaluation.ab`) uses the same assignment for its online view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portrait.errors import InvalidField


def bucket(experiment: str, user_id: str, buckets: int) -> int:
    """The user's bucket in ``[0, buckets)`` for ``experiment``.

    Raises:
        InvalidField: ``buckets`` is below 1.
    """
    if buckets < 1:
        raise InvalidField("buckets", "must be at least 1")
    digest = hashlib.sha256(f"{experiment}:{user_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % buckets


@dataclass(frozen=True)
class Experiment:
    """A named experiment with integer weights per variant (order matters for the ranges).

    Attributes:
        name: the experiment's name; part of the hash, so renaming reshuffles users.
        split: ``(variant, weight)`` pairs; a variant's share is its weight over the total.
    """

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
        """From ``{"name": "ranker-v2", "split": {"control": 50, "treatment": 50}}``.

        Raises:
            InvalidField: a missing or invalid name or split.
        """
        if "name" not in config or "split" not in config:
            raise InvalidField("experiment", "needs 'name' and 'split'")
        split = config["split"]
        if not isinstance(split, Mapping):
            raise InvalidField("split", "must map variant names to integer weights")
        return cls(str(config["name"]), tuple((str(k), v) for k, v in split.items()))

    @property
    def total(self) -> int:
        """The sum of the weights: the number of buckets."""
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
        """The variant of every user in ``user_ids``."""
        return {u: self.assign(u) for u in user_ids}
