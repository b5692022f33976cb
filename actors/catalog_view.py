"""The catalog as shards rank with it, and how a published version reaches them.

A :class:`CatalogView` is one catalog version: the item index, its tag table, popularity,
the tag vocabulary and titles, and the learned ranker stored with its item space (bound to
its rows) when there is one. The publisher hands views to a :class:`CatalogSink`; shards
read the newest from a :class:`CatalogFeed`. In one process both are a
:class:`LocalCatalogChannel`; across a Ray cluster they are the registry actor and the
object store (:mod:`actors.catalog_registry`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from portrait.encoder_versions import EncoderVersion
from portrait.interests import TagVocabulary
from portrait.items import ItemIndex
from portrait.learned_ranker import BoundRanker
from portrait.ranking import TagTable
from portrait.two_stage import BLEND, LEARNED

# How a view crosses processes: plain lists and arrays that pickle (and map zero-copy from
# Ray's object store); see to_parts/from_parts.
IndexParts = tuple[list[str], np.ndarray, list[list[str]], str, EncoderVersion | None]
ExtraParts = tuple[np.ndarray | None, list[str], np.ndarray, list[str]]
# (space version, [(alpha, matrix)], the bound ranker: its Booster pickles as its model text)
SpaceParts = tuple[int, list[tuple[float, np.ndarray]], BoundRanker | None]
# (catalog version, item-space version, event-log position popularity is counted through);
# each part only grows.
ViewKey = tuple[int, int, int]


@dataclass
class CatalogView:
    """One catalog version in one item space, ready to rank with.

    ``items`` is the text-only index: the fold reads tags from it, and a variant ranking with
    text vectors alone ranks in it. ``spaces`` holds the blended indexes (text plus the
    collaborative vectors of item-space ``space_version``) by collaborative share, with the
    same rows; an item the space does not cover keeps its text vector there. ``ranker`` is the
    learned ranker trained with that item space, over the same rows (None: the blend ranks).
    ``encoder`` is the encoder version whose vectors fill the text part (``items.model_id``
    is its model id): a shard encodes its users' texts with it, so it folds and ranks in one
    text space until the next view (None: a view built without versions, the encoder's own).
    """

    version: int
    items: ItemIndex
    popularity: np.ndarray | None
    vocabulary: TagVocabulary | None
    titles: list[str]  # by item row: served with recommendations without a database trip
    space_version: int = 0
    spaces: dict[float, ItemIndex] = field(default_factory=dict)
    popularity_through: int = 0
    ranker: BoundRanker | None = None
    encoder: EncoderVersion | None = None
    tags: TagTable = field(init=False)

    def __post_init__(self) -> None:
        self.tags = TagTable(self.items)

    @property
    def key(self) -> ViewKey:
        return (self.version, self.space_version, self.popularity_through)

    def with_popularity(self, popularity: np.ndarray | None, through: int) -> CatalogView:
        """This view with a newer popularity prior: the indexes (and the column-major copies
        a ranking process built of them) and the tag table are shared, not rebuilt."""
        view = copy.copy(self)
        view.popularity, view.popularity_through = popularity, through
        return view

    @property
    def ranker_name(self) -> str:
        """What a learned ranking says ranked it: ``learned:<item space version>``; ``blend``
        when there is no ranker."""
        return f"{LEARNED}:{self.space_version}" if self.ranker is not None else BLEND

    def items_for(self, alpha: float) -> ItemIndex:
        """The index a variant with collaborative share ``alpha`` ranks in."""
        return self.spaces.get(alpha, self.items)

    def title(self, item_id: str) -> str | None:
        row = self.items.row(item_id)
        return (self.titles[row] or None) if row is not None else None

    def to_parts(self) -> tuple[IndexParts, ExtraParts, SpaceParts]:
        vocab = self.vocabulary
        return (
            (list(self.items.ids), self.items.matrix,
             [list(t) for t in self.items.all_tags()], self.items.model_id, self.encoder),
            (self.popularity, list(vocab.names) if vocab else [],
             vocab.matrix if vocab else np.zeros((0, self.items.dim), np.float32), self.titles),
            (self.space_version, [(a, ix.matrix) for a, ix in self.spaces.items()], self.ranker),
        )

    @classmethod
    def from_parts(
        cls, key: ViewKey, index: IndexParts, extras: ExtraParts, space: SpaceParts
    ) -> CatalogView:
        ids, matrix, tags, model_id, encoder = index
        popularity, names, vocab_matrix, titles = extras
        space_version, blended, ranker = space
        vocabulary = TagVocabulary(tuple(names), vocab_matrix) if names else None
        items = ItemIndex(ids, matrix, tags, model_id=model_id)
        spaces = {
            alpha: ItemIndex(ids, m, tags, model_id=model_id, text_dim=items.dim,
                             space_version=space_version)
            for alpha, m in blended
        }
        return cls(key[0], items, popularity, vocabulary, titles, space_version, spaces, key[2],
                   ranker, encoder)


class CatalogSink(Protocol):
    async def publish(self, view: CatalogView) -> bool:
        """Make ``view`` current if it supersedes the current one (:func:`newer`); returns
        whether it did."""
        ...

    async def current_key(self) -> ViewKey:
        """The key of the view readers get now; ``(-1, -1, -1)`` when there is none (also
        after the registry lost its state)."""
        ...


class CatalogFeed(Protocol):
    async def latest(self, newer_than: ViewKey = (-1, -1, -1)) -> CatalogView | None:
        """The newest published view if its key differs from ``newer_than`` (keys only
        grow), else None: a shard that is up to date fetches nothing."""
        ...


class LocalCatalogChannel:
    """Sink and feed in one process: the in-process system's shards share one view."""

    def __init__(self) -> None:
        self._view: CatalogView | None = None

    async def publish(self, view: CatalogView) -> bool:
        if self._view is not None and not newer(view.key, self._view.key):
            return False
        self._view = view
        return True

    async def current_key(self) -> ViewKey:
        return self._view.key if self._view is not None else (-1, -1, -1)

    async def latest(self, newer_than: ViewKey = (-1, -1, -1)) -> CatalogView | None:
        view = self._view
        return view if view is not None and view.key != newer_than else None


def newer(candidate: ViewKey, current: ViewKey) -> bool:
    """Whether ``candidate`` supersedes ``current``: no part older, one part newer. Two
    publishers (an item upsert, a retrain) each read both parts from the stores, so the one
    that publishes last carries both newest parts."""
    return candidate != current and all(c >= o for c, o in zip(candidate, current, strict=True))


