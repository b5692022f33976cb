"""Publishing a catalog version to the shards through Ray's object store."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Sequence

import numpy as np
import ray

from actors.catalog_registry import get_or_create_registry
from portrait.interests import tag_prompt
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import AsyncEncoder
from portrait.ranking import popularity_scores
from storage.catalog import ItemCatalog, all_titles, catalog_version
from storage.item_stats import item_interaction_counts

_log = logging.getLogger(__name__)


class CatalogPublisher:
    """Loads the catalog from Postgres and hands each new version to every shard."""

    def __init__(self, catalog: ItemCatalog, engine: Any, encoder: AsyncEncoder) -> None:
        self._catalog = catalog
        self._engine = engine
        self._encoder = encoder
        self._tag_vectors: dict[str, np.ndarray] = {}  # tags rarely change: encode each once
        self._lock = asyncio.Lock()
        self.version = -1
        self.index: ItemIndex | None = None

    async def publish(self, shards: Sequence[Any], *, force: bool = False) -> int:
        """Publish the current catalog if it changed (or ``force``); returns its version."""
        async with self._lock:
            version = await catalog_version(self._engine)
            if version == self.version and not force:
                return version
            index = await self._catalog.load_index()
            counts = await item_interaction_counts(self._engine)
            popularity = popularity_scores(
                np.array([counts.get(i, 0) for i in index.ids], dtype=np.float64)
            )
            names = sorted({t for tags in index.all_tags() for t in tags})
            missing = [n for n in names if n not in self._tag_vectors]
            if missing:
                vectors = await self._encoder.encode([tag_prompt(n) for n in missing])
                self._tag_vectors.update(zip(missing, vectors))
            vocab = (
                l2_normalise(np.stack([self._tag_vectors[n] for n in names]))
                if names else np.zeros((0, index.dim), np.float32)
            )
            titles = await all_titles(self._engine)
            refs = [
                ray.put((list(index.ids), index.matrix, [list(t) for t in index.all_tags()], index.model_id)),
                ray.put((popularity, names, vocab, [titles.get(i, "") for i in index.ids])),
            ]
            await get_or_create_registry().publish.remote(version, refs)
            self.version, self.index = version, index
        if shards:
            await asyncio.gather(*(s.refresh_catalog.remote() for s in shards))
        _log.info("catalog version %d published: %d items, %d tags", version, len(index), len(names))
        return version
