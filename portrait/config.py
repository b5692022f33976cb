"""Typed configuration of the profile fold: event weights and half-lives.

A config is a frozen value with a stable hash; snapshots record the hash of the config that
built them, so a config change never mixes states folded under different weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from portrait.errors import InvalidField
from portrait.events import EVENT_TYPES

DAY_SECONDS = 86_400.0


def _default_weights() -> Mapping[str, float]:
    # view < click < cart < purchase; dismiss pushes away. Ratings and reviews are weighted by
    # their rating (weight x (rating - rating_center) / rating_scale); a review's or search's
    # text adds its own vector.
    return MappingProxyType(
        {
            "view": 0.2,
            "click": 0.5,
            "add_to_cart": 1.0,
            "purchase": 2.0,
            "dismiss": -1.0,
            "rating": 1.0,
            "review": 1.0,
            "search": 0.5,
        }
    )


@dataclass(frozen=True)
class ProfileConfig:
    """How events shape a profile.

    Attributes:
        long_half_life_days: half-life of the long-term interest vector.
        short_half_life_days: half-life of the short-term (session) vector.
        tag_half_life_days: half-life of tag and keyword interest weights.
        event_weights: weight per event type for its item vector (and tags).
        text_weights: weight per text event type for the text's own vector and keywords.
        rating_center: ratings above it attract, below it repel.
        rating_scale: distance from the centre that counts as full weight.
        recent_items: how many recently touched items the profile keeps.
        exclude_types: event types whose items are excluded from recommendations.
        max_keywords: keywords a profile keeps: once it holds twice as many, the weakest are
            dropped down to this many. Text brings words without limit, and keywords only
            describe a profile (inspection), so they must not grow with a user's history.
    """

    long_half_life_days: float = 90.0
    short_half_life_days: float = 1.0
    tag_half_life_days: float = 30.0
    event_weights: Mapping[str, float] = field(default_factory=_default_weights)
    text_weights: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType({"review": 1.0, "search": 1.0})
    )
    rating_center: float = 3.0
    rating_scale: float = 2.0
    recent_items: int = 20
    exclude_types: frozenset[str] = frozenset({"purchase", "dismiss", "rating", "review"})
    max_keywords: int = 100

    def __post_init__(self) -> None:
        for name in ("long_half_life_days", "short_half_life_days", "tag_half_life_days"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise InvalidField(name, "must be a positive number of days")
        for mapping_name in ("event_weights", "text_weights"):
            mapping = getattr(self, mapping_name)
            for key, value in mapping.items():
                if key not in EVENT_TYPES:
                    raise InvalidField(f"{mapping_name}.{key}", "unknown event type")
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise InvalidField(f"{mapping_name}.{key}", "must be a number")
            object.__setattr__(self, mapping_name, MappingProxyType(dict(mapping)))
        if not self.rating_scale > 0:
            raise InvalidField("rating_scale", "must be positive")
        if not isinstance(self.recent_items, int) or self.recent_items < 0:
            raise InvalidField("recent_items", "must be a non-negative integer")
        if isinstance(self.max_keywords, bool) or not isinstance(self.max_keywords, int) \
                or self.max_keywords < 1:
            raise InvalidField("max_keywords", "must be a positive integer")
        for key in self.exclude_types:
            if key not in EVENT_TYPES:
                raise InvalidField(f"exclude_types.{key}", "unknown event type")
        object.__setattr__(self, "exclude_types", frozenset(self.exclude_types))

    @property
    def long_half_life_s(self) -> float:
        return self.long_half_life_days * DAY_SECONDS

    @property
    def short_half_life_s(self) -> float:
        return self.short_half_life_days * DAY_SECONDS

    @property
    def tag_half_life_s(self) -> float:
        return self.tag_half_life_days * DAY_SECONDS

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready mapping; ``from_dict`` of it gives an equal config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Mapping):
                value = dict(sorted(value.items()))
            elif isinstance(value, frozenset):
                value = sorted(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProfileConfig:
        """Build a config from a mapping (a tuning result, a config file)."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in known:
                raise InvalidField(key, "unknown profile config field")
        kwargs = dict(data)
        if "exclude_types" in kwargs:
            kwargs["exclude_types"] = frozenset(kwargs["exclude_types"])
        return cls(**kwargs)

    def config_hash(self) -> str:
        """A short stable digest; equal configs hash equal across processes and versions."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]
