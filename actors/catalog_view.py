"""The catalog as shards rank with it, and how a published version reaches them.

A :class:`CatalogView` is one catalog version: the item index, its tag table, popularity,
the tag vocabulary and titles. The publisher hands views to a :class:`CatalogSink`; shards
read the newest from a :class:`CatalogFeed`. In one process both are a
:class:`LocalCatalogChannel`; across a Ray cluster they are the registry actor and the
object store (:mod:`actors.catalog_registry`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from portrait.interests import TagVocabulary
from portrait.items import ItemIndex
from portrait.ranking import TagTable

# How a view crosses processes: plain lists and arrays that pickle (and map zero-copy from
# Ray's object store); see to_parts/from_parts.
IndexParts = tuple[list[str], np.ndarray, list[list[str]], str]
ExtraParts = tuple[np.ndarray | None, list[str], np.ndarray, list[str]]


@dataclass
class CatalogView:
    """One catalog version, ready to rank with."""

    version: int
    items: ItemIndex
    popularity: np.ndarray | None
    vocabulary: TagVocabulary | None
    titles: list[str]  # by item row: served with recommendations without a database trip
    tags: TagTable = field(init=False)

    def __post_init__(self) -> None:
        self.tags = TagTable(self.items)

    def title(self, item_id: str) -> str | None:
        row = self.items.row(item_id)
        return (self.titles[row] or None) if row is not None else None

    def to_parts(self) -> tuple[IndexParts, ExtraParts]:
        vocab = self.vocabulary
        return (
            (list(self.items.ids), self.items.matrix,
             [list(t) for t in self.items.all_tags()], self.items.model_id),
            (self.popularity, list(vocab.names) if vocab else [],
             vocab.matrix if vocab else np.zeros((0, self.items.dim), np.float32), self.titles),
        )

    @classmethod
    def from_parts(cls, version: int, index: IndexParts, extras: ExtraParts) -> CatalogView:
        ids, matrix, tags, model_id = index
        popularity, names, vocab_matrix, titles = extras
        vocabulary = TagVocabulary(tuple(names), vocab_matrix) if names else None
        return cls(version, ItemIndex(ids, matrix, tags, model_id=model_id), popularity,
                   vocabulary, titles)


class CatalogSink(Protocol):
    async def publish(self, view: CatalogView) -> bool:
        """Make ``view`` current if it is newer than the current one; returns whether."""
        ...


class CatalogFeed(Protocol):
    async def latest(self, newer_than: int = -1) -> CatalogView | None:
        """The newest published view if its version is above ``newer_than``, else None
        (so a shard that is up to date fetches nothing)."""
        ...


class LocalCatalogChannel:
    """Sink and feed in one process: the in-process system's shards share one view."""

    def __init__(self) -> None:
        self._view: CatalogView | None = None

    async def publish(self, view: CatalogView) -> bool:
        if self._view is not None and view.version <= self._view.version:
            return False
        self._view = view
        return True

    async def latest(self, newer_than: int = -1) -> CatalogView | None:
        view = self._view
        return view if view is not None and view.version > newer_than else None


