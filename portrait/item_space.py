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
        max_items: cap on the items with a collaborative vector (the most interacted kept),
            so on the ``items x dim`` vectors.
        power_iterations: power iterations of the randomized range finder.
        oversample: extra columns of the range finder.
        seed: seed of the range finder and of the history sample.
        max_user_items: a user with more items adds a seeded random sample of this many to
            the co-occurrence (its cost grows with the square); 0: no cap.
        max_nonzeros: bound on the sparse SPPMI matrix: each item keeps its
            ``max_nonzeros // items`` strongest entries, so the symmetric matrix holds at most
            ``2 * max_nonzeros``; 0: no bound.

    ``max_user_items`` and ``max_nonzeros`` drop nothing on the evaluation's data sets; they
    bound a million-item catalog's retrain (see :mod:`portrait.sppmi`).
    """

    dim: int = 512
    shift: float = 1.0
    min_count: int = 2
    max_items: int = 12_000
    power_iterations: int = 3
    oversample: int = 16
    seed: int = 0
    max_user_items: int = 5_000
    max_nonzeros: int = 32_000_000

    def to_dict(self) -> dict[str, float | int]:
        """A JSON-ready mapping; :meth:`from_dict` of it gives an equal value.

        The scale bounds (``max_user_items``, ``max_nonzeros``) are written only when they
        differ from their defaults, so documents written before they existed round-trip
        unchanged.
        """
        doc: dict[str, float | int] = {
            "dim": self.dim,
            "shift": self.shift,
            "min_count": self.min_count,
            "max_items": self.max_items,
            "power_iterations": self.power_iterations,
            "oversample": self.oversample,
            "seed": self.seed,
        }
        for name in _SCALE_BOUNDS:
            if getattr(self, name) != getattr(_DEFAULTS, name):
                doc[name] = getattr(self, name)
        return doc

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


_DEFAULTS = CollabSettings()
_SCALE_BOUNDS = ("max_user_items", "max_nonzeros")


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
