"""The catalog as shards rank with it, and how a published version reaches them.

A :class:`CatalogView` is one catalog version: the item index, its tag table, popularity,
the tag vocabulary and titles, and the learned ranker stored with its item space (bound to
its rows) when there is one. The publisher hands views to a :class:`CatalogSink`; shards
read the newest from a :class:`CatalogFeed`. In one process both are a
:class:`LocalCatalogChannel`; across a Ray cluster they are the registry actor and the
object store (:mod:`actors.catalog_registry`).

A view is a *base* (built whole: at the start, after a retrain or an encoder switch, or to
compact) followed by *deltas* (:class:`CatalogDelta`: the items written since, appended
after the base's rows, see :meth:`ItemIndex.extended`). A reader that holds the base applies
only the deltas it lacks, so an item upsert costs every process what changed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from portrait.ann import VectorIndex
from portrait.blended import BlendedIndex
from portrait.encoder_versions import EncoderVersion
from portrait.interests import TagVocabulary
from portrait.items import ItemIndex
from portrait.learned_ranker import BoundRanker
from portrait.packed import Appended, PackedStrings, PackedTags
from portrait.ranking import TagTable
from portrait.two_stage import BLEND, LEARNED

# How a view crosses processes: plain lists and arrays that pickle (and map zero-copy from
# Ray's object store); see to_parts/from_parts. Titles travel with the index (they change
# with it), popularity and the tag vocabulary as the extras (popularity moves on its own).
IndexParts = tuple[list[str], np.ndarray, PackedTags, str, EncoderVersion | None, PackedStrings,
                   np.ndarray | None]
ExtraParts = tuple[np.ndarray | None, list[str], np.ndarray]
# (space version, the collaborative shares, each text row's collaborative row (-1: none), the
# covered items' collaborative vectors and ids, the bound ranker: its Booster pickles as its
# model text). The blended indexes are composed from these and the text index when read.
SpaceParts = tuple[int, list[float], np.ndarray, np.ndarray, list[str], BoundRanker | None]
# Each space's approximate index as bytes (faiss's own serialisation; see portrait.ann).
IndexesPart = dict[str | float, bytes | np.ndarray]
# (catalog version, item-space version, event-log position popularity is counted through);
# each part only grows.
ViewKey = tuple[int, int, int]


TEXT_SPACE = "text"  # the key of the text-only index's approximate index


class LazyIndex:
    """An approximate index as the object store holds it (bytes), loaded into this process
    on first use, and grown there with the rows deltas appended after its build (they are
    searchable at once). A publisher that never ranks never loads it."""

    __slots__ = ("_bytes", "_index")

    def __init__(self, data: bytes | np.ndarray) -> None:
        self._bytes: bytes | np.ndarray | None = data
        self._index: VectorIndex | None = None

    @property
    def data(self) -> bytes | np.ndarray:
        if self._bytes is None:
            self._bytes = self._loaded().to_bytes()
        return self._bytes

    def _loaded(self) -> VectorIndex:
        if self._index is None:
            assert self._bytes is not None
            self._index = VectorIndex.from_bytes(self._bytes)
            self._bytes = None  # the loaded index is this process's copy; the bytes are not
        return self._index

    def over(self, items: ItemIndex) -> VectorIndex:
        """The index with every row of ``items`` (rows appended since its build added)."""
        index = self._loaded()
        if len(index) < len(items):
            index.add(items.vectors(np.arange(len(index), len(items), dtype=np.int64)))
        return index


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
    titles: Sequence[str]  # by item row: served with recommendations without a database trip
    space_version: int = 0
    spaces: dict[float, BlendedIndex] = field(default_factory=dict)
    popularity_through: int = 0
    ranker: BoundRanker | None = None
    encoder: EncoderVersion | None = None
    # Approximate indexes over the base's rows, by space (TEXT_SPACE, or the blended index's
    # collaborative share); empty below the size where ranking scans (see portrait.ann).
    indexes: dict[str | float, LazyIndex] = field(default_factory=dict)
    tags: TagTable = field(init=False)
    base_key: ViewKey = field(init=False)  # the key of the base this view's deltas follow

    def __post_init__(self) -> None:
        self.tags = TagTable(self.items)
        self.base_key = self.key

    @property
    def tail(self) -> int:
        """Rows that came with deltas (0 for a base)."""
        return len(self.items) - self.items.n_base

    def with_delta(self, delta: CatalogDelta) -> CatalogView:
        """This view with ``delta``'s items appended (changed ones superseding their old
        rows) in every index; the base's arrays are shared, not copied."""
        view = copy.copy(self)
        view.items = self.items.extended(delta.ids, delta.matrix, delta.tags)
        view.spaces = {a: ix.over(view.items) for a, ix in self.spaces.items()}
        view.tags = self.tags.extended(delta.tags)
        view.titles = Appended(self.titles, delta.titles)
        old = self.popularity if self.popularity is not None else np.zeros(len(self.items),
                                                                           np.float32)
        view.popularity = np.concatenate([old, delta.popularity]).astype(np.float32)
        if delta.vocabulary is not None:
            names, matrix = delta.vocabulary
            view.vocabulary = TagVocabulary(tuple(names), matrix) if names else None
        if self.ranker is not None:
            view.ranker = self.ranker.grown(len(view.items))
        view.version, view.popularity_through = delta.key[0], delta.key[2]
        return view

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

    def vector_index(self, space: str | float) -> VectorIndex | None:
        """The approximate index of ``space`` over every row of this view (None: none was
        built, the catalog is ranked by scanning it)."""
        lazy = self.indexes.get(space)
        if lazy is None:
            return None
        return lazy.over(self.items if space == TEXT_SPACE else self.items_for(float(space)))

    def items_for(self, alpha: float) -> ItemIndex:
        """The index a variant with collaborative share ``alpha`` ranks in."""
        return self.spaces.get(alpha, self.items)

    def title(self, item_id: str) -> str | None:
        row = self.items.row(item_id)
        return (self.titles[row] or None) if row is not None else None

    def flattened(self) -> CatalogView:
        """This view as a base of its own: the deltas' rows moved into one matrix after the
        base's, in the same order (superseded rows stay, marked, where they were), so every
        row keeps its number: popularity, the ranker's neighbours and the deltas published
        after this view apply to it unchanged. A whole rebuild from the store drops the
        superseded rows."""
        if self.tail == 0:
            return self
        rows = list(range(len(self.items)))
        items = ItemIndex(list(self.items.ids), self.items.matrix,
                          PackedTags.of([self.items.tags(i) for i in rows]),
                          model_id=self.items.model_id, alive=self.items.alive)
        view = copy.copy(self)
        view.items = items
        view.titles = PackedStrings.of(list(self.titles))
        view.spaces = {a: ix.on(items) for a, ix in self.spaces.items()}
        view.tags = TagTable(items)
        view.base_key = self.key
        return view

    def extras(self) -> ExtraParts:
        vocab = self.vocabulary
        return (self.popularity, list(vocab.names) if vocab else [],
                vocab.matrix if vocab else np.zeros((0, self.items.dim), np.float32))

    def to_parts(self) -> tuple[IndexParts, ExtraParts, SpaceParts, IndexesPart]:
        """The view whole, as a base (a view grown by deltas is flattened first)."""
        view = self.flattened()
        items = view.items
        blend = next(iter(view.spaces.values()), None)
        slots, collab = blend.parts() if blend is not None else (
            np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        covered = sorted(blend._covers, key=blend._covers.__getitem__) if blend else []
        tags, titles = items.all_tags(), view.titles
        return (
            (list(items.ids), items.matrix,
             tags if isinstance(tags, PackedTags) else PackedTags.of(tags), items.model_id,
             view.encoder,
             titles if isinstance(titles, PackedStrings) else PackedStrings.of(titles),
             items.alive),
            view.extras(),
            (view.space_version, list(view.spaces), slots, collab, covered, view.ranker),
            {space: lazy.data for space, lazy in view.indexes.items()},
        )

    @classmethod
    def from_parts(
        cls, key: ViewKey, index: IndexParts, extras: ExtraParts, space: SpaceParts,
        indexes: IndexesPart,
    ) -> CatalogView:
        ids, matrix, tags, model_id, encoder, titles, alive = index
        popularity, names, vocab_matrix = extras
        space_version, alphas, slots, collab, covered, ranker = space
        vocabulary = TagVocabulary(tuple(names), vocab_matrix) if names else None
        items = ItemIndex(ids, matrix, tags, model_id=model_id, alive=alive)
        covers = {item_id: row for row, item_id in enumerate(covered)}
        spaces = {a: BlendedIndex(items, slots, collab, a, space_version, covers)
                  for a in alphas}
        return cls(key[0], items, popularity, vocabulary, titles, space_version, spaces, key[2],
                   ranker, encoder, {s: LazyIndex(data) for s, data in indexes.items()})


@dataclass(frozen=True)
class CatalogDelta:
    """Items written since the view keyed ``after``, as the view keyed ``key`` holds them.

    ``matrix`` holds their text vectors (unit rows, the text-only index's; the blended
    indexes compose theirs from these, see :mod:`portrait.blended`), ``popularity`` their
    prior.
    ``vocabulary`` is the whole tag vocabulary when the delta's tags changed it, else None.
    """

    after: ViewKey
    key: ViewKey
    ids: tuple[str, ...]
    matrix: np.ndarray
    tags: tuple[tuple[str, ...], ...]
    titles: tuple[str, ...]
    popularity: np.ndarray
    vocabulary: tuple[list[str], np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.ids)


class CatalogSink(Protocol):
    async def publish(self, view: CatalogView) -> bool:
        """Make ``view`` current if it supersedes the current one (:func:`newer`); returns
        whether it did."""
        ...

    async def compact(
        self, flat: CatalogView, later: Sequence[CatalogDelta]
    ) -> CatalogView | None:
        """Replace the base readers start from with ``flat`` (the current chain flattened
        up to ``flat.key``, rows in the same order), keeping the deltas ``later`` published
        after it; the current view's key does not change. Returns the current view on the
        new base (as readers map it), None when ``flat`` is not of the current chain."""
        ...

    async def shared(self, view: CatalogView) -> CatalogView | None:
        """Publish ``view`` whole and return it as readers map it (from shared memory where
        there is some), for the publisher to keep instead of a copy of its own; None when
        it did not supersede the current view."""
        ...

    async def publish_delta(self, view: CatalogView, delta: CatalogDelta) -> bool:
        """Make ``view`` (the current view grown by ``delta``) current; readers that hold the
        current view fetch the delta alone. Returns False when the sink cannot take it (it
        does not hold ``delta.after``: restarted, or another view went out): the caller
        publishes the view whole then."""
        ...

    async def current_key(self) -> ViewKey:
        """The key of the view readers get now; ``(-1, -1, -1)`` when there is none (also
        after the registry lost its state)."""
        ...


class CatalogFeed(Protocol):
    async def latest(self, mine: CatalogView | None = None) -> CatalogView | None:
        """The newest published view if its key differs from ``mine``'s (keys only grow),
        else None: a shard that is up to date fetches nothing. Built on ``mine`` where it
        can be (its base with the deltas it lacks, or its indexes with newer popularity)."""
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

    async def compact(
        self, flat: CatalogView, later: Sequence[CatalogDelta]
    ) -> CatalogView | None:
        if self._view is None:
            return None
        view = flat
        for delta in later:
            view = view.with_delta(delta)
        if view.key != self._view.key:
            return None
        self._view = view
        return view

    async def shared(self, view: CatalogView) -> CatalogView | None:
        return view if await self.publish(view) else None

    async def publish_delta(self, view: CatalogView, delta: CatalogDelta) -> bool:
        if self._view is None or self._view.key != delta.after:
            return False
        return await self.publish(view)

    async def current_key(self) -> ViewKey:
        return self._view.key if self._view is not None else (-1, -1, -1)

    async def latest(self, mine: CatalogView | None = None) -> CatalogView | None:
        view = self._view
        if view is None or (mine is not None and (view.key, view.base_key)
                            == (mine.key, mine.base_key)):
            return None
        return view


def newer(candidate: ViewKey, current: ViewKey) -> bool:
    """Whether ``candidate`` supersedes ``current``: no part older, one part newer. Two
    publishers (an item upsert, a retrain) each read both parts from the stores, so the one
    that publishes last carries both newest parts."""
    return candidate != current and all(c >= o for c, o in zip(candidate, current, strict=True))


