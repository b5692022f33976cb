"""The baselines' own parameters, chosen on the validation split as Portrait's are.

Pure: numpy and the standard library only, no I/O. The item-kNN neighbourhood size and
recency half-life, the recent-popularity window and EASE's regularisation are grid-searched
on validation (:func:`tune_baselines`), never on test: one runner pass for the item-kNN and
popularity candidates, and one per EASE candidate, so that only one dense (items x items)
EASE matrix is held at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from portrait.evaluation.baselines import (
    EASE,
    ItemKNN,
    MostPopular,
    RecentPopular,
    ease_l2_grid,
)
from portrait.evaluation.runner import System, run
from portrait.evaluation.splits import Split
from portrait.evaluation.tuning import OBJECTIVE, mean_metrics


@dataclass
class BaselineChoice:
    """The baselines' parameters chosen on validation, and every candidate's mean metrics."""

    knn_neighbors: int
    knn_seq_neighbors: int
    knn_seq_half_life: float
    recent_window_days: float
    ease_l2: float
    validation: dict[str, dict[str, float]]  # candidate name -> mean metrics

    def to_dict(self) -> dict[str, Any]:
        return {
            "item-knn": {"neighbors": self.knn_neighbors},
            "item-knn-seq": {
                "neighbors": self.knn_seq_neighbors,
                "recency_half_life": self.knn_seq_half_life,
            },
            "recent-popular": {"window_days": self.recent_window_days},
            "ease": {"l2": self.ease_l2},
        }

    def candidates(self) -> dict[str, str]:
        """Each tuned baseline's name -> its chosen candidate's name in :attr:`validation`.

        The popularity-only ``most-popular`` has no parameters and is not a candidate.
        """
        return {
            "item-knn": f"knn:{self.knn_neighbors}",
            "item-knn-seq": f"knnseq:{self.knn_seq_neighbors}:{self.knn_seq_half_life:g}",
            "recent-popular": f"recent:{self.recent_window_days:g}",
            "ease": f"ease:{self.ease_l2:g}",
        }


KNN_NEIGHBORS = (10, 20, 50, 100, 200, 400)
KNN_HALF_LIVES = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0)
RECENT_WINDOWS_DAYS = (1.0, 7.0, 30.0, 90.0, 365.0)
# EASE's l2 in units of the mean item count (see ease_l2_grid); each costs one matrix inverse.
# On ml-latest-small validation NDCG@10 peaks at 5 (0.0431; 0.0361 at 0.5, 0.0347 at 100).
EASE_L2_FACTORS = (0.5, 1.0, 2.0, 5.0, 20.0, 100.0)


def tune_baselines(
    validation: Split,
    incidence: np.ndarray,
    item_ids: Sequence[str],
    objective: str = OBJECTIVE,
    neighbors: Sequence[int] = KNN_NEIGHBORS,
    half_lives: Sequence[float] = KNN_HALF_LIVES,
    windows: Sequence[float] = RECENT_WINDOWS_DAYS,
    l2_factors: Sequence[float] = EASE_L2_FACTORS,
) -> BaselineChoice:
    """Grid-search the baselines' own parameters on ``validation``.

    ``incidence`` must come from ``validation.train_events``.
    """
    largest = ItemKNN(incidence, item_ids, max(neighbors))
    systems: list[System] = []
    for k in neighbors:
        systems.append(ItemKNN.with_neighbors(largest, k, f"knn:{k}"))
        for h in half_lives:
            systems.append(ItemKNN.with_neighbors(largest, k, f"knnseq:{k}:{h:g}", h))
    for w in windows:
        systems.append(RecentPopular(w, f"recent:{w:g}"))
    result = run(validation, systems, item_ids)
    means = {name: mean_metrics(result, name) for name in result.systems}
    del systems, largest, result
    for l2 in ease_l2_grid(incidence, l2_factors):
        name = f"ease:{l2:g}"
        ease_run = run(validation, [EASE(incidence, item_ids, l2, name)], item_ids)
        means[name] = mean_metrics(ease_run, name)

    def best(prefix: str) -> str:
        names = [n for n in means if n.startswith(prefix)]
        return max(names, key=lambda n: (means[n][objective], -names.index(n)))

    knn = best("knn:")
    seq = best("knnseq:")
    recent = best("recent:")
    ease = best("ease:")
    return BaselineChoice(
        knn_neighbors=int(knn.split(":")[1]),
        knn_seq_neighbors=int(seq.split(":")[1]),
        knn_seq_half_life=float(seq.split(":")[2]),
        recent_window_days=float(recent.split(":")[1]),
        ease_l2=float(ease.split(":")[1]),
        validation=means,
    )


def baseline_systems(
    choice: BaselineChoice, incidence: np.ndarray, item_ids: Sequence[str]
) -> list[System]:
    """The tuned baselines, built from ``incidence`` (the split's own training events)."""
    k = max(choice.knn_neighbors, choice.knn_seq_neighbors)
    largest = ItemKNN(incidence, item_ids, k)
    return [
        MostPopular("most-popular"),
        RecentPopular(choice.recent_window_days, "recent-popular"),
        ItemKNN.with_neighbors(largest, choice.knn_neighbors, "item-knn"),
        ItemKNN.with_neighbors(
            largest, choice.knn_seq_neighbors, "item-knn-seq", choice.knn_seq_half_life
        ),
        EASE(incidence, item_ids, choice.ease_l2, "ease"),
    ]
