"""Which profile and ranking configuration serves a user: one default, or an A/B experiment.

A user's variant is a pure function of the experiment name and the user id
(:meth:`portrait.experiments.Experiment.assign`), so every ingress replica and shard agrees
without coordination, and a user's profile is always folded under one configuration: their
variant's (snapshots are keyed by that configuration's hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.experiments import Experiment
from portrait.ranking import RankingConfig
from portrait.tuned_config import ItemVectorSettings

DEFAULT_VARIANT = "default"


@dataclass(frozen=True)
class Variant:
    """One configuration: how profiles fold, how they rank, and which item space they rank
    in (``items.alpha``: the collaborative share of the blended item vectors)."""

    name: str
    profile: ProfileConfig
    ranking: RankingConfig
    items: ItemVectorSettings = ItemVectorSettings()

    def config_hash(self) -> str:
        """A short hash of everything that shapes this variant's lists (profile fold, ranking,
        item vectors): impressions record it, so a report can tell configurations apart."""
        doc = {"profile": self.profile.config_hash(),
               "ranking": dataclasses.asdict(self.ranking),
               "items": dataclasses.asdict(self.items)}
        text = json.dumps(doc, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class VariantPolicy:
    """Maps users to variants."""

    def __init__(
        self, variants: Mapping[str, Variant], experiment: Experiment | None = None
    ) -> None:
        if not variants:
            raise InvalidField("variants", "at least one variant is needed")
        if experiment is None and len(variants) != 1:
            raise InvalidField("experiment", "several variants need an experiment to split users")
        if experiment is not None:
            missing = {name for name, _ in experiment.split} - set(variants)
            if missing:
                raise InvalidField("experiment.split", f"no configuration for {sorted(missing)}")
        self.variants = dict(variants)
        self.experiment = experiment
        # Interleaving ranks one user's profile under both variants, so both must fold it
        # the same way (they may differ in ranking and item space).
        self.interleaved: tuple[Variant, Variant] | None = None
        if experiment is not None and experiment.interleaved:
            a, b = (self.variants[name] for name in experiment.variant_names)
            if a.profile.config_hash() != b.profile.config_hash():
                raise InvalidField("experiment.variants", "interleaved variants must share one "
                                   "profile configuration (they may differ in ranking and "
                                   "item vectors)")
            self.interleaved = (a, b)
        self._only = next(iter(self.variants.values())) if experiment is None else None

    @classmethod
    def single(
        cls,
        profile: ProfileConfig,
        ranking: RankingConfig | None = None,
        items: ItemVectorSettings | None = None,
    ) -> VariantPolicy:
        variant = Variant(
            DEFAULT_VARIANT, profile, ranking or RankingConfig(), items or ItemVectorSettings()
        )
        return cls({DEFAULT_VARIANT: variant})

    def learned(self) -> Variant | None:
        """The variant the learned ranker is trained for and serves: the only one, or under
        an experiment the one named ``default``; None when an experiment has none of that
        name (its variants are compared as configured, not all replaced by one ranker)."""
        if self._only is not None:
            return self._only
        return self.variants.get(DEFAULT_VARIANT)

    def alphas(self) -> tuple[float, ...]:
        """The collaborative shares the variants rank with (0 = text only), sorted."""
        return tuple(sorted({v.items.alpha for v in self.variants.values()}))

    def for_user(self, user_id: str) -> Variant:
        if self._only is not None:
            return self._only
        assert self.experiment is not None
        return self.variants[self.experiment.assign(user_id)]
