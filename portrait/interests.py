"""Zero-shot interest tags: which catalog tags a profile's vectors point at.

The catalog's tag vocabulary (genres, categories) is embedded with the same encoder as the
items. A profile's long-term vector, decayed like the rest, is compared with every tag vector;
the closest tags are the user's inferred interests even when no item they touched carried the
tag (a user who searched "spaceships and aliens" scores high on "Sci-Fi").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from portrait.errors import InvalidField
from portrait.items import l2_normalise


@dataclass(frozen=True)
class TagVocabulary:
    """Tag names and their L2-normalised embeddings, one row per tag."""

    names: tuple[str, ...]
    matrix: np.ndarray

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2 or self.matrix.shape[0] != len(self.names):
            raise InvalidField("matrix", "must have one row per tag name")

    @classmethod
    def build(cls, names: Sequence[str], vectors: np.ndarray) -> TagVocabulary:
        return cls(tuple(names), l2_normalise(vectors))


def tag_prompt(tag: str) -> str:
    """The text encoded for a tag: the bare name reads poorly to a sentence encoder."""
    return f"{tag} items"


def infer_tags(
    vector: np.ndarray, vocabulary: TagVocabulary, top: int = 5, min_score: float = 0.15
) -> list[tuple[str, float]]:
    """Tags whose embedding is closest to ``vector`` (cosine), best first."""
    norm = float(np.linalg.norm(vector))
    if norm == 0.0 or not vocabulary.names:
        return []
    scores = vocabulary.matrix @ (np.asarray(vector, dtype=np.float32) / norm)
    order = np.argsort(-scores, kind="stable")[:top]
    return [
        (vocabulary.names[i], round(float(scores[i]), 6)) for i in order if scores[i] >= min_score
    ]
