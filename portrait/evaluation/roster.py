"""The systems an evaluation compares: the tuned baselines, tuned Portrait and its ablations.

Pure: numpy and the standard library only, no I/O.

Every ablation removes one component from the tuned configuration and re-tunes nothing, so a
drop in its score is what that component adds given the others. ``portrait-defaults`` is what
the service runs with no configuration (:func:`portrait.default_config.default_config`); the
text-only and collaborative-only variants exist when collaborative vectors were built.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from portrait.default_config import default_config
from portrait.evaluation.baseline_tuning import BaselineChoice
from portrait.evaluation.baselines import no_decay
from portrait.evaluation.runner import System
from portrait.evaluation.tuning import PortraitFactory, PortraitParams

REFERENCE = "portrait"
BASELINES = ("most-popular", "recent-popular", "item-knn", "item-knn-seq", "ease")
# the baselines the issue lists; item-knn-seq (sequence-aware) and EASE are extras
ISSUE_BASELINES = ("most-popular", "recent-popular", "item-knn")


def default_params(has_collab: bool) -> PortraitParams:
    """The service's default configuration as search parameters; text only (alpha 0) when the
    phase has no collaborative vectors, as the service before its first retrain."""
    config = default_config()
    alpha = config.item_vectors.alpha if has_collab else 0.0
    return PortraitParams(config.profile, config.ranking, alpha)


def portrait_systems(
    factory: PortraitFactory, params: PortraitParams, has_collab: bool
) -> list[System]:
    """Tuned Portrait (named :data:`REFERENCE`) and its ablations, one component removed each.

    Args:
        factory: builds the systems over the phase's catalog and item vectors.
        params: the tuned parameters.
        has_collab: whether collaborative vectors exist (adds the text-only and
            collaborative-only variants).
    """
    r = params.ranking
    systems: list[System] = [
        factory.system(REFERENCE, params),
        factory.system("portrait-defaults", default_params(has_collab)),
        factory.system(
            "portrait-no-decay", dataclasses.replace(params, profile=no_decay(params.profile))
        ),
        factory.system(
            "portrait-no-short-term",
            dataclasses.replace(params, ranking=dataclasses.replace(r, short_mix=0.0)),
        ),
        factory.system(
            "portrait-no-tags",
            dataclasses.replace(params, ranking=dataclasses.replace(r, tag_weight=0.0)),
        ),
        factory.system(
            "portrait-no-popularity",
            dataclasses.replace(params, ranking=dataclasses.replace(r, popularity_weight=0.0)),
        ),
    ]
    if has_collab:
        systems += [
            factory.system("portrait-text-only", dataclasses.replace(params, alpha=0.0)),
            factory.system("portrait-collab-only", dataclasses.replace(params, alpha=1.0)),
        ]
    return systems


def headline_systems(names: Iterable[str]) -> list[str]:
    """The names among ``names`` that plots and tables single out: the baselines and Portrait.

    The order of ``names`` is kept.
    """
    return [n for n in names if n in BASELINES or n == REFERENCE]


def best_validation_baseline(choice: BaselineChoice, metric: str = "NDCG@10") -> tuple[str, str]:
    """The tuned baseline with the best validation ``metric``.

    Returns:
        ``(baseline name, candidate name in choice.validation)``.
    """
    return max(
        choice.candidates().items(), key=lambda kv: choice.validation[kv[1]][metric]
    )
