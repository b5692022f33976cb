"""The item catalog: upserts that encode only what changed, over any :class:`CatalogStore`.

An item's embedding is stored with the model id that produced it. Upserting an item whose
encoder text (:func:`portrait.catalog.item_text`) and model are unchanged writes nothing, so
re-importing a catalog is cheap and idempotent. A model change is handled by
:meth:`ItemCatalog.reencode`, which re-encodes every item the current model did not produce.

With an encoder-version store, "the current model" is the active encoder version (see
:mod:`portrait.encoder_versions`): after a switch, upserts encode with it and the index is
read under its model id; the encoder passed in must then be able to encode with a named
version (``encode_for``).
The stores are :class:`storage.postgres_catalog.PostgresCatalogStore` and
:class:`storage.memory_catalog.InMemoryCatalogStore`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from portrait.catalog import ItemRecord, item_text
from portrait.encoder_versions import BASE_VERSION, EncoderVersion, EncoderVersionStore
from portrait.errors import EncoderUnavailable, InvalidField
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import AsyncEncoder, CatalogStore, StoredItem
from portrait.progress import Progress
from portrait.prompts import prompts_of


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """How many items were new, changed, or already up to date; how many were encoded."""

    inserted: int
    updated: int
    unchanged: int
    encoded: int


class ItemCatalog:
    """Catalog reads and writes. ``encoder`` may be the Serve handle client or a local engine."""

    def __init__(
        self, store: CatalogStore, encoder: AsyncEncoder, *, chunk_size: int = 256,
        versions: EncoderVersionStore | None = None,
    ) -> None:
        self.store = store
        self._encoder = encoder
        self._chunk = chunk_size
        self._versions = versions

    @property
    def model_id(self) -> str:
        """The base encoder's model id (see :meth:`encoder` for the active one)."""
        return self._encoder.model_id

    def base_encoder(self) -> EncoderVersion:
        """Version 0, the base: this catalog's encoder, whichever version is active."""
        return EncoderVersion(BASE_VERSION, "base", self._encoder.model_id,
                              self._encoder.model_id, "", None, self._encoder.dim, "active",
                              prompts=prompts_of(self._encoder))

    async def encoder(self) -> EncoderVersion:
        """The active encoder version: the base (this catalog's encoder) unless a switch made
        another one active."""
        base = self.base_encoder()
        if self._versions is None:
            return base
        active = await self._versions.active()
        if active.version == BASE_VERSION:
            return base
        version = await self._versions.get(active.version)
        if version is None:
            raise InvalidField("encoder", f"the active encoder version {active.version} is "
                                          "not registered")
        return version

    async def _encode(self, version: EncoderVersion, texts: list[str]) -> np.ndarray:
        if version.is_base:
            return await self._encoder.encode(texts)
        encode_for = getattr(self._encoder, "encode_for", None)
        if encode_for is None:
            raise EncoderUnavailable(
                f"encoder version {version.name!r} is active, and this encoder encodes with "
                "the base only")
        vectors: np.ndarray = await encode_for(version, texts)
        return vectors

    async def upsert(
        self, records: Sequence[ItemRecord], progress: Progress | None = None
    ) -> UpsertResult:
        """Insert or update ``records``; encode those whose text or model changed.

        Duplicate ids within one call are an error (which one should win is ambiguous).
        Each chunk is written in its own transaction after encoding, so an interrupted import
        keeps what it finished and a re-run picks up where it stopped.
        """
        seen: set[str] = set()
        for i, rec in enumerate(records):
            if rec.item_id in seen:
                raise InvalidField(f"items[{i}].id", f"duplicate item id {rec.item_id!r}")
            seen.add(rec.item_id)
        inserted = updated = unchanged = encoded = 0
        version = await self.encoder()
        model = version.model_id
        for start in range(0, len(records), self._chunk):
            chunk = records[start : start + self._chunk]
            existing = await self.store.existing([r.item_id for r in chunk])
            todo = []
            for rec in chunk:
                old = existing.get(rec.item_id)
                if old is not None and old == (item_text(rec), model):
                    unchanged += 1
                else:
                    todo.append(rec)
                    if old is None:
                        inserted += 1
                    else:
                        updated += 1
            if todo:
                vectors = await self._encode(
                    version, version.prompts.passages([item_text(r) for r in todo]))
                encoded += len(todo)
                await self.store.write(
                    [StoredItem(r, v, model) for r, v in zip(todo, vectors, strict=True)]
                )
            if progress is not None:
                progress(start + len(chunk), len(records))
        return UpsertResult(inserted, updated, unchanged, encoded)

    async def stale_count(self) -> int:
        """Items whose embedding the current model did not produce."""
        return len(await self.store.not_embedded_by((await self.encoder()).model_id))

    async def reencode(self, progress: Progress | None = None) -> int:
        """Re-encode every item not embedded by the current model. Returns how many."""
        records = await self.store.not_embedded_by((await self.encoder()).model_id)
        result = await self.upsert(records, progress)
        return result.encoded

    async def get(self, item_id: str) -> ItemRecord | None:
        return await self.store.get(item_id)

    async def load_index(self, version: EncoderVersion | None = None) -> ItemIndex:
        """Every item embedded by ``version`` (default: the active one), as an
        :class:`ItemIndex` (ordered by id)."""
        version = version or await self.encoder()
        got = await self.store.vectors(version.model_id, version.dim)
        return ItemIndex(got.ids, l2_normalise(got.matrix), got.tags, model_id=version.model_id)
