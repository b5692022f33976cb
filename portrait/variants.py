"""Which profile and ranking configuration serves a user: one default, or an A/B experiment.

A user's variant is a pure function of the experiment name and the user id
(:meth:`portrait.experiments.Experiment.assign`), so every ingress replica and shard agrees
without coordination, and a user's profile is always folded under one configuration: their
variant's (snapshots are keyed by that configuration's hash).
"""

from __future__ import annotations

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

    def alphas(self) -> tuple[float, ...]:
        """The collaborative shares the variants rank with (0 = text only), sorted."""
        return tuple(sorted({v.items.alpha for v in self.variants.values()}))

    def for_user(self, user_id: str) -> Variant:
        if self._only is not None:
            return self._only
        assert self.experiment is not None
        return self.variants[self.experiment.assign(user_id)]
