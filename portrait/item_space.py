"""A collaborative item space: how it is trained (:class:`CollabSettings`) and what a
retrain publishes (:class:`ItemSpace`).

Values only, apart from the algorithm that computes them (:mod:`portrait.collaborative`), so
the tuned-config document, the :class:`~portrait.ports.ItemSpaceStore` port and its adapters
can name them without importing the algorithm, which imports the ranking and so the profile.

Pure: numpy and the standard library only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from portrait.errors import InvalidField
from portrait.validation import is_number


@dataclass(frozen=True)
class CollabSettings:
    """Knobs of the collaborative item vectors.

    See :func:`portrait.collaborative.sppmi_embedding`, which builds them.

    Attributes:
        dim: vector size.
        shift: SPPMI shift ``k`` (``log(k)`` is subtracted from the PMI).
        min_count: training users an item needs to get a collaborative vector.
        max_items: cap on the items in the co-occurrence matrix (the most interacted kept).
        power_iterations: power iterations of the randomized range finder.
        oversample: extra columns of the range finder.
        seed: seed of the range finder.
    """

    dim: int = 512
    shift: float = 1.0
    min_count: int = 2
    max_items: int = 12_000
    power_iterations: int = 3
    oversample: int = 16
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        """A JSON-ready mapping; :meth:`from_dict` of it gives an equal value."""
        return {
            "dim": self.dim,
            "shift": self.shift,
            "min_count": self.min_count,
            "max_items": self.max_items,
            "power_iterations": self.power_iterations,
            "oversample": self.oversample,
            "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], prefix: str = "") -> CollabSettings:
        """Settings from a mapping; missing keys take their defaults.

        Args:
            data: the mapping (a document's ``item_vectors.collaborative``).
            prefix: prepended to the key named in errors (``"item_vectors.collaborative."``).

        Raises:
            InvalidField: an unknown key, or a value of the wrong type or range.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key not in known:
                raise InvalidField(f"{prefix}{key}", "unknown collaborative setting")
            if key == "shift":
                if not is_number(value) or not value > 0:
                    raise InvalidField(f"{prefix}{key}", "must be a positive number")
                kwargs[key] = float(value)
            else:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise InvalidField(f"{prefix}{key}", "must be a non-negative integer")
                kwargs[key] = value
        return cls(**kwargs)


@dataclass(frozen=True)
class ItemSpace:
    """One trained collaborative item space.

    Attributes:
        version: assigned by the store that keeps it (0 before it is saved).
        item_ids: the items it has vectors for (others keep their text vector alone).
        vectors: ``(len(item_ids), dim)`` float32, L2-normalised.
        trained_through: the event log's global position the training read up to.
        events: item events it was trained on.
        settings: how it was trained.
        ranker: a serialised learned ranker trained in the same retrain
            (``portrait.learned_ranker.RankerBundle.to_bytes``), or None when the retrain
            refused to train one (too little data).
    """

    version: int
    item_ids: tuple[str, ...]
    vectors: np.ndarray
    trained_through: int
    events: int
    settings: CollabSettings
    ranker: bytes | None = None
