"""A/B experiments: which variant a user is in, by hashing.

Pure: the standard library only, no I/O.

Assignment: ``sha256(f"{experiment}:{user_id}")``, its first 8 bytes as an unsigned big-endian
integer, modulo the sum of the split's weights, picks the bucket; variants own consecutive
ranges of buckets in the order the split lists them. The same user in the same experiment always
gets the same variant, in any process, on any machine; another experiment name reshuffles users
independently. Weights are integers (``{"control": 50, "treatment": 50}``,
``{"a": 1, "b": 1, "c": 2}``).

Mode: ``"ab"`` (the default) splits users as above; ``"interleave"`` serves every user a
team-draft interleaving of exactly two variants' lists (:mod:`portrait.interleaving`), the
weights then being unused.

The service assigns users with it (:mod:`portrait.variants`); the offline comparison of two
configurations (:mod:`portrait.evaluation.ab`) uses the same assignment for its online view.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from portrait.errors import InvalidField
from portrait.impression import AB, INTERLEAVE, MODES


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
    mode: str = AB

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InvalidField("mode", f"must be one of {', '.join(MODES)}")
        if self.mode == INTERLEAVE and len(self.split) != 2:
            raise InvalidField("split", "interleaving compares exactly two variants")
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
        if self.mode == AB and sum(w for _, w in self.split) <= 0:
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
        mode = config.get("mode", AB)
        if not isinstance(mode, str):
            raise InvalidField("mode", f"must be one of {', '.join(MODES)}")
        return cls(str(config["name"]), tuple((str(k), v) for k, v in split.items()), mode)

    @property
    def interleaved(self) -> bool:
        return self.mode == INTERLEAVE

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v for v, _ in self.split)

    @property
    def total(self) -> int:
        """The sum of the weights: the number of buckets."""
        return sum(w for _, w in self.split)

    def assign(self, user_id: str) -> str:
        """The variant of ``user_id``; stable across processes and runs. Under interleaving,
        the first variant: the one whose profile configuration folds every user."""
        if self.mode == INTERLEAVE:
            return self.split[0][0]
        b = bucket(self.name, user_id, self.total)
        for variant, weight in self.split:
            if b < weight:
                return variant
            b -= weight
        raise AssertionError("unreachable: bucket beyond the weights")  # pragma: no cover

    def assign_all(self, user_ids: Sequence[str]) -> dict[str, str]:
        """The variant of every user in ``user_ids``."""
        return {u: self.assign(u) for u in user_ids}
