"""Building catalog views: the catalog store's items in the newest item space, as a view
every shard ranks with. Only :class:`actors.catalog_publication.CatalogPublication`, the
one owner of publication, builds them.

The learned ranker stored with the item space is decoded and bound to the view's rows here,
once per view: a ranker the running code cannot use (another features version, bytes that
do not decode) is never loaded, a warning says why once, and the blend keeps serving."""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Protocol

import faiss
import numpy as np

from actors.catalog_view import (
    TEXT_SPACE,
    CatalogDelta,
    CatalogSink,
    CatalogView,
    LazyIndex,
    ViewKey,
)
from portrait.ann import AnnSettings, VectorIndex
from portrait.blended import BlendedIndex, blended_index, covers_of
from portrait.encoder_versions import EncoderVersion
from portrait.interests import TagVocabulary, tag_prompt
from portrait.item_space import ItemSpace
from portrait.items import ItemIndex, l2_normalise
from portrait.learned_ranker import BoundRanker, IncompatibleRanker, RankerBundle
from portrait.ports import AsyncEncoder
from portrait.ranking import popularity_scores
from storage.catalog import ItemCatalog

_log = logging.getLogger(__name__)
# A tail of deltas longer than this, and than this share of the base, is folded into a new
# base (each process holds its own copy of the tail; the base is shared). Doubling keeps the
# copying of a catalog loaded from empty to about twice its size in all.
COMPACT_MIN_ROWS = 20_000
COMPACT_SHARE = 1.0


def _rows_of(index: ItemIndex) -> np.ndarray:
    """Every row's vector, without keeping a copy on the index: a flattened text index is its
    base already; a blended one is composed for the build and let go after it (its cached
    whole matrix would be a second copy of the catalog in the publisher)."""
    if isinstance(index, BlendedIndex) or index.tail_rows:
        return index.vectors(np.arange(len(index), dtype=np.int64))
    return index.base_matrix


class LatestItemSpace(Protocol):
    """The part of the item-space store a publisher reads."""

    async def latest(self) -> Any: ...
    async def latest_version(self) -> int: ...


class CatalogViewBuilder:
    """Builds a :class:`CatalogView` of the current catalog and item space for the sink.

    Args:
        catalog: the catalog (its store gives the version, titles and popularity counts).
        item_spaces: where retrains store collaborative vectors; the newest is blended in.
        encoder: encodes tag names for the tag vocabulary.
        sink: where views go.
        alphas: the collaborative shares the variants rank with; a blended index is built
            once per share above 0, here, so shards on a node share it.
    """

    def __init__(
        self,
        catalog: ItemCatalog,
        item_spaces: LatestItemSpace,
        encoder: AsyncEncoder,
        sink: CatalogSink,
        alphas: Sequence[float] = (),
        ann: AnnSettings | None = None,
    ) -> None:
        self._catalog = catalog
        self._spaces = item_spaces
        self._encoder = encoder
        self._sink = sink
        self._alphas = tuple(a for a in alphas if a > 0.0)
        self._ann = ann or AnnSettings()
        # Per model id, tag name -> vector: tags rarely change, each is encoded once.
        self._tag_vectors: dict[str, dict[str, np.ndarray]] = {}
        self._lock = asyncio.Lock()
        self.key: ViewKey = (-1, -1, -1)
        self._view: CatalogView | None = None
        # Popularity is counted incrementally: the log's positive events up to _counted_through.
        self._counts: dict[str, int] = {}
        self._counted_through = 0
        # An erasure takes the user's events out of popularity: counted again from the start.
        self._erasures = 0
        self._refused_rankers: set[int] = set()  # item-space versions warned about
        # What deltas need between whole builds: the store version the last read covered,
        # the item space blended in (and its rows by id), the tag names of the vocabulary,
        # the popularity scale, when the last delta went out.
        self._read_at = 0
        self._space: ItemSpace | None = None  # the last whole view's (its ranker's)
        self._space_rows: dict[str, int] = {}
        self._tag_names: set[str] = set()
        self._popularity_top = 0.0
        self._last_delta_at = time.monotonic()
        self._deltas: list[CatalogDelta] = []  # published since the current base
        self._rebuild_wanted = False  # a whole view is due, built in the background

    @property
    def version(self) -> int:
        return self.key[0]

    async def publish(self, *, force: bool = False) -> int:
        """Publish the current catalog, item space and popularity if any of them changed
        (or ``force``); returns the catalog version.

        Items written since the last view go out as a delta (:class:`CatalogDelta`) built
        from those items alone; the view is built whole only at the start, when the item
        space or the encoder changed, when the sink lost it, or by :meth:`compact`. A change
        of popularity alone republishes the previous view's indexes with the new prior.
        """
        async with self._lock:
            last = self._view
            read_at = await self._catalog.store.version()
            encoder = await self._catalog.encoder()
            space_version = await self._spaces.latest_version()
            whole = (force or last is None or space_version != last.space_version
                     or encoder.model_id != last.items.model_id)
            if whole and last is not None and not force and self._ann.serves(len(last.items)):
                # A catalog ranked through indexes: the new view and its indexes are built in
                # the background (rebuild); the current one serves, and takes deltas, until
                # then, rather than a view without indexes (a scan of the catalog per request).
                self._rebuild_wanted = True
                if read_at == last.version:
                    return last.version
                view = await self._grow(last, read_at)
            elif whole or last is None:
                view = await self._build(read_at)
                view = await self._sink.shared(view) or view
                self._deltas = []
            elif read_at != last.version:
                view = await self._grow(last, read_at)
            else:
                recounted = await self._recount_after_erasures()
                through = await self._count_new_interactions()
                if through == last.popularity_through and not recounted:
                    return last.version
                view = last.with_popularity(self._popularity(last.items.ids), through)
                await self._sink.publish(view)
            self._view, self.key = view, view.key
        _log.info("catalog %d, item space %d, popularity through %d published: %d items "
                  "(%d after the base)", *view.key, len(view.items), view.tail)
        return view.version

    def status(self) -> dict[str, Any]:
        """The published view, for operators (``GET /v1/item-space``'s ``catalog``)."""
        view = self._view
        if view is None:
            return {"published": False}
        return {"published": True, "version": view.version, "rows": len(view.items),
                "rows_after_base": view.tail, "item_space": view.space_version,
                "indexes": sorted(str(s) for s in view.indexes),
                "rebuild_pending": self._rebuild_wanted}

    async def rebuild(self) -> bool:
        """Build the whole view (the new item space or encoder) and its indexes outside the
        lock while the current view serves and takes deltas; catch it up with the items
        written meanwhile and publish it. A failed build leaves the current view serving
        (and is tried again at the next check)."""
        read_at = await self._catalog.store.version()
        view = await self._build(read_at, counts=False)
        view = await asyncio.to_thread(self._flatten, view)
        async with self._lock:
            now = await self._catalog.store.version()
            changes = await self._changes(view, read_at)
            if changes is not None:
                view = view.with_delta(changes)
            view = view.with_popularity(self._popularity(view.items.ids), self.key[2])
            view.version = max(now, self.key[0])
            mapped = await self._sink.shared(view)
            if mapped is None:
                return False
            self._view, self.key = mapped, mapped.key
            self._deltas, self._read_at, self._rebuild_wanted = [], now, False
        _log.info("catalog rebuilt in item space %d: %d rows", mapped.space_version,
                  len(mapped.items))
        return True

    @property
    def rebuild_wanted(self) -> bool:
        return self._rebuild_wanted

    def compaction_due(self, quiet_s: float) -> bool:
        """Whether the deltas since the base should be folded into a new base: they are a
        large share of it (each process holds the tail, and adds it to its approximate
        indexes), or the catalog has been quiet for ``quiet_s`` with a tail left over; or the
        view is large enough to be ranked through approximate indexes and lacks them (a
        whole view goes out without them, so that building them never holds it back)."""
        view = self._view
        if view is None:
            return False
        if self._missing_indexes(view):
            return True
        if view.tail == 0:
            return False
        if view.tail > max(COMPACT_MIN_ROWS, COMPACT_SHARE * view.items.n_base):
            return True
        return time.monotonic() - self._last_delta_at >= quiet_s

    async def compact(self) -> bool:
        """Fold the deltas into a new base: the current view flattened (rows in the same
        order, so nothing bound to them changes) outside the lock, in a thread, while deltas
        keep going out; then the base is swapped, the deltas published meanwhile kept after
        it. No store read and no re-encoding. Returns whether it did; a failed flattening
        leaves the current view serving."""
        snapshot = self._view
        if snapshot is None or (snapshot.tail == 0 and not self._missing_indexes(snapshot)):
            return False
        flat = await asyncio.to_thread(self._flatten, snapshot)
        async with self._lock:
            last = self._view
            if last is None or last.base_key != snapshot.base_key:
                return False  # a whole view went out meanwhile (retrain, switch, start)
            later = [d for d in self._deltas if d.key[0] > snapshot.version]
            current = await self._sink.compact(flat, later)
            if current is None:
                return False
            self._view, self.key, self._deltas = current, current.key, later
        _log.info("catalog compacted: %d rows in the new base, %d after it",
                  len(flat.items), current.tail)
        return True

    def _flatten(self, view: CatalogView) -> CatalogView:
        """``view`` flattened, with approximate indexes over all its rows when it is large
        enough to be ranked through them (built here, once, not in every shard)."""
        flat = copy.copy(view.flattened())
        if self._ann.serves(len(flat.items)):
            # One thread: faiss's OpenMP workers spin between regions, and on a node shared
            # with the shards and the ingress they starved Ray's own processes (a million-item
            # import lost its raylet to missed heartbeats while an index was built).
            faiss.omp_set_num_threads(1)
            spaces: list[tuple[str | float, ItemIndex]] = [(TEXT_SPACE, flat.items)]
            spaces += list(flat.spaces.items())
            flat.indexes = {space: LazyIndex(VectorIndex.build(_rows_of(index)).to_bytes())
                            for space, index in spaces}
        else:
            flat.indexes = {}
        return flat

    def _missing_indexes(self, view: CatalogView) -> bool:
        wanted = {TEXT_SPACE, *view.spaces} if self._ann.serves(len(view.items)) else set()
        return set(view.indexes) != wanted

    async def _build(self, read_at: int, *, counts: bool = True) -> CatalogView:
        """The whole view: every item the active encoder embedded, in the newest item space.
        ``read_at`` is the store version read before any item: changes after it are read
        again by the next delta."""
        through = self.key[2]
        if counts:
            await self._recount_after_erasures()
            through = await self._count_new_interactions()
        encoder, index = await self._index()
        space = await self._spaces.latest()
        self._space = space
        self._space_rows = covers_of(space) if space is not None else {}
        self._read_at = read_at
        view = CatalogView(
            read_at, index, self._popularity(index.ids),
            await self._vocabulary(index.all_tags(), encoder),
            await self._titles(index.ids), space.version if space is not None else 0,
            {a: blended_index(index, space, a, self._space_rows)
             for a in self._alphas} if space else {},
            popularity_through=through,
            ranker=self._ranker(space, index),
            encoder=encoder,
        )
        return view

    async def _grow(self, last: CatalogView, read_at: int) -> CatalogView:
        """``last`` with the items written since it, published as a delta (whole when the
        sink cannot take a delta)."""
        delta = await self._changes(last, self._read_at)
        if delta is None:
            delta = self._delta(last, [], np.zeros((0, last.items.text_dim), np.float32), [],
                                [], None)
        delta = replace(delta, key=(read_at, *last.key[1:]))
        view = last.with_delta(delta)
        self._deltas.append(delta)
        self._read_at = read_at
        self._last_delta_at = time.monotonic()
        if not await self._sink.publish_delta(view, delta):  # the sink lost the chain
            view = await self._sink.shared(view) or view
            self._deltas = []
        return view

    async def _changes(self, view: CatalogView, since: int) -> CatalogDelta | None:
        """The items written after ``since`` that differ from what ``view`` holds (the read
        looks back over the store's commit skew, so it returns some it already has), as a
        delta on ``view``; None when there are none."""
        got = await self._catalog.store.changed_since(since, view.items.model_id,
                                                      view.items.text_dim)
        if not got.ids:
            return None
        matrix = l2_normalise(got.matrix)
        rows = view.items.rows_of(got.ids)
        same = np.zeros(len(got.ids), dtype=bool)
        held = np.flatnonzero(rows >= 0)
        if held.size:
            equal = np.all(view.items.vectors(rows[held]) == matrix[held], axis=1)
            for j, i in zip(held[equal], rows[held][equal], strict=True):
                same[j] = (view.titles[i] == got.titles[j]
                           and tuple(view.items.tags(int(i))) == tuple(got.tags[j]))
        keep = np.flatnonzero(~same)
        if keep.size == 0:
            return None
        encoder = view.encoder or await self._catalog.encoder()
        return self._delta(view, [got.ids[i] for i in keep], matrix[keep],
                           [tuple(got.tags[i]) for i in keep], [got.titles[i] for i in keep],
                           await self._new_vocabulary([got.tags[i] for i in keep], encoder))

    def _delta(self, view: CatalogView, ids: list[str], matrix: np.ndarray,
               tags: list[tuple[str, ...]], titles: list[str],
               vocabulary: TagVocabulary | None) -> CatalogDelta:
        top = self._popularity_top
        counts = np.array([self._counts.get(i, 0) for i in ids], dtype=np.float64)
        popularity = (np.minimum(np.log1p(counts) / top, 1.0) if top > 0
                      else np.zeros(len(ids))).astype(np.float32)
        return CatalogDelta(
            view.key, view.key, tuple(ids), matrix, tuple(tags), tuple(titles), popularity,
            (list(vocabulary.names), vocabulary.matrix) if vocabulary is not None else None)

    async def _index(self) -> tuple[EncoderVersion, ItemIndex]:
        """The active encoder version and the catalog's vectors under it. A switch that
        commits between the two reads moves every vector to another model id: read again,
        rather than publish an index of the items (none) the old model still has."""
        for _ in range(3):
            encoder = await self._catalog.encoder()
            index = await self._catalog.load_index(encoder)
            if (await self._catalog.encoder()).model_id == encoder.model_id:
                return encoder, index
        return encoder, index

    def _ranker(self, space: Any, index: ItemIndex) -> BoundRanker | None:
        """The space's learned ranker over ``index``'s rows (every alpha's index has the same
        rows), or None: no ranker stored, or one this code must not load."""
        if space is None or space.ranker is None:
            return None
        try:
            return RankerBundle.from_bytes(space.ranker).bind(index)
        except IncompatibleRanker as exc:
            if space.version not in self._refused_rankers:
                self._refused_rankers.add(space.version)
                _log.warning("item space %d: its learned ranker is not loaded (%s); the blend "
                             "serves", space.version, exc)
            return None

    async def _recount_after_erasures(self) -> bool:
        erasures = await self._catalog.store.erasure_count()
        if erasures == self._erasures:
            return False
        self._counts, self._counted_through, self._erasures = {}, 0, erasures
        return True

    async def _count_new_interactions(self) -> int:
        new, through = await self._catalog.store.interaction_counts(self._counted_through)
        for item_id, n in new.items():
            self._counts[item_id] = self._counts.get(item_id, 0) + n
        self._counted_through = through
        return through

    def _popularity(self, ids: Sequence[str]) -> np.ndarray:
        counts = np.array([self._counts.get(i, 0) for i in ids], dtype=np.float64)
        # The scale new items' prior is put on until the next whole count (see _delta).
        self._popularity_top = float(np.log1p(counts.max())) if counts.size else 0.0
        return popularity_scores(counts)

    async def _vocabulary(self, tags: Sequence[Sequence[str]],
                          encoder: EncoderVersion) -> TagVocabulary | None:
        """Tag names encoded by the view's encoder version (in its text space)."""
        self._tag_names = {t for item_tags in tags for t in item_tags}
        return await self._vocabulary_of(sorted(self._tag_names), encoder)

    async def _new_vocabulary(self, tags: Sequence[Sequence[str]],
                              encoder: EncoderVersion) -> TagVocabulary | None:
        """The whole vocabulary when ``tags`` (a delta's) bring names it lacks, else None."""
        new = {t for item_tags in tags for t in item_tags} - self._tag_names
        if not new:
            return None
        self._tag_names |= new
        return await self._vocabulary_of(sorted(self._tag_names), encoder)

    async def _vocabulary_of(self, names: list[str],
                             encoder: EncoderVersion) -> TagVocabulary | None:
        known = self._tag_vectors.setdefault(encoder.model_id, {})
        missing = [n for n in names if n not in known]
        if missing:
            texts = encoder.prompts.queries([tag_prompt(n) for n in missing])
            if encoder.model_id == self._encoder.model_id:
                vectors = await self._encoder.encode(texts)
            else:
                vectors = await self._encoder.encode_for(  # type: ignore[attr-defined]
                    encoder, texts)
            known.update(zip(missing, vectors, strict=True))
        if not names:
            return None
        return TagVocabulary(tuple(names), l2_normalise(np.stack([known[n] for n in names])))

    async def _titles(self, ids: Sequence[str]) -> list[str]:
        titles = await self._catalog.store.titles()
        return [titles.get(i, "") for i in ids]
