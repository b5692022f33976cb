"""The systems an evaluation compares: the tuned baselines, Portrait and its ablations.

Pure: numpy, the standard library and the learned ranker only, no I/O.

Portrait (:data:`REFERENCE`) is what the service serves once a ranker exists: the two-stage
system (retrievers, then the LightGBM ranker), its profile folded under the tuned blend's
configuration and the ranker trained on the phase's training events only. The ranker is not
tuned: fixed :class:`~portrait.learned_ranker.RankerSettings` with early stopping on held-out
training users. :data:`BLEND` is the tuned linear blend, what the service serves before a
ranker exists (and what the reference falls back to when training is refused).

Every ablation removes one component and re-tunes nothing, so a drop in its score is what
that component adds given the others: the two-stage system without the text features and
without each retriever (``portrait-no-*``, trained anew each), the blend without each of its
terms (``blend-no-*``). ``blend-defaults`` is what the service runs with no configuration
(:func:`portrait.default_config.default_config`); the text-only and collaborative-only blends
exist when collaborative vectors were built.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from portrait.default_config import default_config
from portrait.evaluation.baseline_tuning import BaselineChoice
from portrait.evaluation.baselines import no_decay
from portrait.evaluation.runner import PortraitSystem, System
from portrait.evaluation.splits import Split
from portrait.evaluation.tuning import PortraitFactory, PortraitParams
from portrait.evaluation.two_stage_system import TwoStageSystem
from portrait.learned_ranker import NotEnoughTraining, RankerSettings, feature_importance
from portrait.ranker_features import TEXT_FEATURES
from portrait.retrieval import RETRIEVERS

REFERENCE = "portrait"
BLEND = "portrait-blend"
BASELINES = ("most-popular", "recent-popular", "item-knn", "item-knn-seq", "ease")
# the baselines the issue lists; item-knn-seq (sequence-aware) and EASE are extras
ISSUE_BASELINES = ("most-popular", "recent-popular", "item-knn")
TWO_STAGE = "two-stage"
# what the reference is when the ranker could not be trained
BLEND_FALLBACK = "blend"


def default_params(has_collab: bool) -> PortraitParams:
    """The service's default configuration as search parameters; text only (alpha 0) when the
    phase has no collaborative vectors, as the service before its first retrain."""
    config = default_config()
    alpha = config.item_vectors.alpha if has_collab else 0.0
    return PortraitParams(config.profile, config.ranking, alpha)


def blend_systems(
    factory: PortraitFactory, params: PortraitParams, has_collab: bool
) -> list[PortraitSystem]:
    """The tuned blend (named :data:`BLEND`) and its ablations, one term removed each."""
    r = params.ranking
    systems = [
        # folded states are shared with the two-stage systems over it (same profile config)
        factory.system(BLEND, params, state_cache={}),
        factory.system("blend-defaults", default_params(has_collab)),
        factory.system(
            "blend-no-decay", dataclasses.replace(params, profile=no_decay(params.profile))
        ),
        factory.system(
            "blend-no-short-term",
            dataclasses.replace(params, ranking=dataclasses.replace(r, short_mix=0.0)),
        ),
        factory.system(
            "blend-no-tags",
            dataclasses.replace(params, ranking=dataclasses.replace(r, tag_weight=0.0)),
        ),
        factory.system(
            "blend-no-popularity",
            dataclasses.replace(params, ranking=dataclasses.replace(r, popularity_weight=0.0)),
        ),
    ]
    if has_collab:
        systems += [
            factory.system("blend-text-only", dataclasses.replace(params, alpha=0.0)),
            factory.system("blend-collab-only", dataclasses.replace(params, alpha=1.0)),
        ]
    return systems


def ranker_variants(settings: RankerSettings) -> dict[str, RankerSettings]:
    """The two-stage systems by name: the reference, a second seed, and one ablation each
    without the text features (:data:`~portrait.ranker_features.TEXT_FEATURES`: the text
    retriever and the keyword feature) and without each retriever."""
    variants = {
        REFERENCE: settings,
        f"{REFERENCE}-seed1": dataclasses.replace(settings, seed=settings.seed + 1),
    }
    no_text = tuple(r for r in settings.retrievers if f"{r}_score" not in TEXT_FEATURES)
    if no_text != settings.retrievers:
        variants[f"{REFERENCE}-no-text-features"] = dataclasses.replace(
            settings, retrievers=no_text,
            extras=tuple(e for e in settings.extras if e not in TEXT_FEATURES),
        )
    for r in RETRIEVERS:
        kept = tuple(x for x in settings.retrievers if x != r)
        if r in settings.retrievers and kept:
            variants[f"{REFERENCE}-no-{r}"] = dataclasses.replace(settings, retrievers=kept)
    return variants


@dataclass
class Roster:
    """The Portrait systems of one evaluation and what training the rankers amounted to.

    Attributes:
        systems: every Portrait system, the reference first.
        reference: :data:`TWO_STAGE`, or :data:`BLEND_FALLBACK` when training was refused.
        note: why the reference is the blend (``None`` when it is the two-stage system).
        settings: the reference ranker's settings.
        training: per trained system, the ranker's figures (validation NDCG@10 on held-out
            training users, rounds, groups, candidate recall) and its training seconds.
        refused: per two-stage system not trained, the reason.
        importance: the reference ranker's total gain per feature, largest first.
    """

    systems: list[System]
    reference: str
    note: str | None
    settings: RankerSettings
    training: dict[str, dict[str, float]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    importance: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference, "note": self.note, "settings": self.settings.to_dict(),
            "training": self.training, "refused": self.refused, "importance": self.importance,
        }


def portrait_systems(
    factory: PortraitFactory,
    params: PortraitParams,
    has_collab: bool,
    split: Split,
    settings: RankerSettings | None = None,
    log: Callable[[str], None] | None = None,
) -> Roster:
    """Portrait (two-stage, named :data:`REFERENCE`), its ablations and the blend's.

    Args:
        factory: builds the systems over the phase's catalog and item vectors.
        params: the tuned blend's parameters (the two-stage system's profile and ranking
            configuration too).
        has_collab: whether collaborative vectors exist (adds the text-only and
            collaborative-only blends).
        split: the phase being evaluated; rankers learn from its training events only.
        settings: the reference ranker's settings (default :class:`RankerSettings`).
        log: told one line per ranker trained or refused.
    """
    settings = settings or RankerSettings()
    blends = blend_systems(factory, params, has_collab)
    profile = blends[0]
    trained: list[System] = []
    roster = Roster([], TWO_STAGE, None, settings)
    for name, s in ranker_variants(settings).items():
        t0 = time.perf_counter()
        try:
            system = TwoStageSystem.trained(name, profile, split, s)
        except NotEnoughTraining as e:
            roster.refused[name] = str(e)
            if log is not None:
                log(f"{name}: ranker not trained: {e}")
            if name == REFERENCE:
                roster.reference = BLEND_FALLBACK
                roster.note = (
                    f"The learned ranker was not trained ({e}), so `{REFERENCE}` is the tuned "
                    f"blend (the same system as `{BLEND}`), as the service serves it."
                )
                break
            continue
        seconds = time.perf_counter() - t0
        roster.training[name] = {**system.bundle.metrics, "seconds": seconds}
        if name == REFERENCE:
            roster.importance = dict(
                sorted(feature_importance(system.bundle).items(), key=lambda kv: -kv[1])
            )
        if log is not None:
            log(f"{name}: ranker trained in {seconds:.0f}s "
                f"(validation NDCG@10 {system.bundle.metrics.get('validation_ndcg10', 0):.4f})")
        trained.append(system)
    if roster.reference == BLEND_FALLBACK:
        trained = [factory.system(REFERENCE, params)]
    roster.systems = [*trained, *blends]
    return roster


def headline_systems(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that plots and tables single out: the baselines, Portrait
    and the blend.

    The order of ``names`` is kept.
    """
    return [n for n in names if n in BASELINES or n in (REFERENCE, BLEND)]


def best_validation_baseline(choice: BaselineChoice, metric: str = "NDCG@10") -> tuple[str, str]:
    """The tuned baseline with the best validation ``metric``.

    Returns:
        ``(baseline name, candidate name in choice.validation)``.
    """
    return max(
        choice.candidates().items(), key=lambda kv: choice.validation[kv[1]][metric]
    )
