"""Publishing catalog versions: the catalog store's items as a view every shard ranks with."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from actors.catalog_view import CatalogSink, CatalogView
from portrait.interests import TagVocabulary, tag_prompt
from portrait.items import l2_normalise
from portrait.ports import AsyncEncoder
from portrait.ranking import popularity_scores
from storage.catalog import ItemCatalog

_log = logging.getLogger(__name__)


class CatalogPublisher:
    """Builds a :class:`CatalogView` of the current catalog and hands it to the sink."""

    def __init__(self, catalog: ItemCatalog, encoder: AsyncEncoder, sink: CatalogSink) -> None:
        self._catalog = catalog
        self._encoder = encoder
        self._sink = sink
        self._tag_vectors: dict[str, np.ndarray] = {}  # tags rarely change: encode each once
        self._lock = asyncio.Lock()
        self.version = -1

    async def publish(self, *, force: bool = False) -> int:
        """Publish the current catalog if it changed (or ``force``); returns its version."""
        async with self._lock:
            store = self._catalog.store
            version = await store.version()
            if version == self.version and not force:
                return version
            index = await self._catalog.load_index()
            counts = await store.interaction_counts()
            popularity = popularity_scores(
                np.array([counts.get(i, 0) for i in index.ids], dtype=np.float64)
            )
            names = sorted({t for tags in index.all_tags() for t in tags})
            missing = [n for n in names if n not in self._tag_vectors]
            if missing:
                vectors = await self._encoder.encode([tag_prompt(n) for n in missing])
                self._tag_vectors.update(zip(missing, vectors, strict=True))
            vocabulary = (
                TagVocabulary(tuple(names), l2_normalise(np.stack([self._tag_vectors[n] for n in names])))
                if names else None
            )
            titles = await store.titles()
            view = CatalogView(version, index, popularity, vocabulary,
                               [titles.get(i, "") for i in index.ids])
            await self._sink.publish(view)
            self.version = version
        _log.info("catalog version %d published: %d items, %d tags", version, len(index), len(names))
        return version
