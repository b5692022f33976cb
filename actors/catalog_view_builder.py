"""Building catalog views: the catalog store's items in the newest item space, as a view
every shard ranks with. Only :class:`actors.catalog_publication.CatalogPublication`, the
one owner of publication, builds them.

The learned ranker stored with the item space is decoded and bound to the view's rows here,
once per view: a ranker the running code cannot use (another features version, bytes that
do not decode) is never loaded, a warning says why once, and the blend keeps serving."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from actors.catalog_view import CatalogSink, CatalogView, ViewKey
from portrait.collaborative import blended_index
from portrait.encoder_versions import EncoderVersion
from portrait.interests import TagVocabulary, tag_prompt
from portrait.items import ItemIndex, l2_normalise
from portrait.learned_ranker import BoundRanker, IncompatibleRanker, RankerBundle
from portrait.ports import AsyncEncoder
from portrait.ranking import popularity_scores
from storage.catalog import ItemCatalog

_log = logging.getLogger(__name__)


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
    ) -> None:
        self._catalog = catalog
        self._spaces = item_spaces
        self._encoder = encoder
        self._sink = sink
        self._alphas = tuple(a for a in alphas if a > 0.0)
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

    @property
    def version(self) -> int:
        return self.key[0]

    async def publish(self, *, force: bool = False) -> int:
        """Publish the current catalog, item space and popularity if any of them changed
        (or ``force``); returns the catalog version.

        A change of popularity alone (new interactions in the log) republishes the previous
        view's indexes with the new prior, so nothing is rebuilt or re-encoded for it.
        """
        async with self._lock:
            version = await self._catalog.store.version()
            space_version = await self._spaces.latest_version()
            recounted = await self._recount_after_erasures()
            through = await self._count_new_interactions()
            key = (version, space_version, through)
            if key == self.key and not force and not recounted:
                return version
            last = self._view
            ids = last.items.ids if last is not None else ()
            if last is not None and not force and key[:2] == last.key[:2]:
                view = last.with_popularity(self._popularity(ids), through)
            else:
                encoder, index = await self._index()
                space = await self._spaces.latest()
                view = CatalogView(
                    version, index, self._popularity(index.ids),
                    await self._vocabulary(index, encoder),
                    await self._titles(index.ids), space.version if space is not None else 0,
                    {a: blended_index(index, space, a)
                     for a in self._alphas} if space else {},
                    popularity_through=through,
                    ranker=self._ranker(space, index),
                    encoder=encoder,
                )
            await self._sink.publish(view)
            self._view, self.key = view, view.key
        _log.info("catalog %d, item space %d, popularity through %d published: %d items",
                  *view.key, len(view.items))
        return version

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
        counts = self._counts
        return popularity_scores(np.array([counts.get(i, 0) for i in ids], dtype=np.float64))

    async def _vocabulary(self, index: Any, encoder: EncoderVersion) -> TagVocabulary | None:
        """Tag names encoded by the view's encoder version (in its text space)."""
        names = sorted({t for tags in index.all_tags() for t in tags})
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
