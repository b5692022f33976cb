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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from portrait.catalog import ItemRecord, ItemVector, item_text
from portrait.encoder_versions import BASE_VERSION, EncoderVersion, EncoderVersionStore
from portrait.errors import EncoderUnavailable, InvalidField
from portrait.items import ItemIndex, l2_normalise
from portrait.ports import AsyncEncoder, CatalogStore, StoredItem
from portrait.progress import Progress
from portrait.prompts import prompts_of


@dataclass(frozen=True, slots=True)
class UpsertResult:
    """How many items were new, changed, or already up to date; how many were encoded, and
    how many were stored with the vector the caller brought (not encoded)."""

    inserted: int
    updated: int
    unchanged: int
    encoded: int
    given: int = 0


@runtime_checkable
class VectorReads(Protocol):
    """A catalog store that can show its stored vectors, so that re-importing items with the
    same brought vectors writes nothing (both shipped stores can)."""

    async def existing_vectors(
        self, ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, bytes]]:
        """item id -> (encoder text, model id, little-endian float32 vector bytes)."""
        ...


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
        self, records: Sequence[ItemRecord], progress: Progress | None = None, *,
        vectors: Sequence[ItemVector | None] | None = None, names: str = "items[{i}].",
        tally: Callable[[UpsertResult], None] | None = None, atomic: bool = False,
    ) -> UpsertResult:
        """Insert or update ``records``; encode those whose text or model changed.

        ``vectors``, aligned with ``records``, holds the vectors a shop brought for some items
        (None for the others): those items are stored with them and not encoded. The whole
        call is checked before anything is written (duplicate ids; each given vector's width
        and model against the active encoder), so a refused call changes nothing; errors
        name the field as ``names`` spells item ``i`` (``items[3].vector``).

        Each chunk is written in its own transaction after encoding, so an interrupted import
        keeps what it finished and a re-run picks up where it stopped. ``progress`` gets the
        items done so far; ``tally`` the counts so far, after each chunk (what an import
        shows: skipped as unchanged, encoded, given). ``atomic`` writes the whole call in one
        transaction after every chunk is encoded (an API batch: an encoder failure midway
        writes nothing).
        """
        if vectors is None:
            vectors = [None] * len(records)
        if len(vectors) != len(records):
            raise ValueError(f"{len(vectors)} vectors for {len(records)} records")
        version = await self.encoder()
        self.check(records, vectors, version, names)
        counts = {"inserted": 0, "updated": 0, "unchanged": 0, "encoded": 0, "given": 0}
        held: list[StoredItem] = []
        for start in range(0, len(records), self._chunk):
            end = start + self._chunk
            rows = await self._upsert_chunk(version, records[start:end], vectors[start:end],
                                            counts)
            if atomic:
                held.extend(rows)
            elif rows:
                await self.store.write(rows)
            if progress is not None:
                progress(min(end, len(records)), len(records))
            if tally is not None:
                tally(UpsertResult(**counts))
        if held:
            await self.store.write(held)
        return UpsertResult(**counts)

    @staticmethod
    def check(records: Sequence[ItemRecord], vectors: Sequence[ItemVector | None],
              version: EncoderVersion, names: str = "items[{i}].") -> None:
        """Refuse the whole batch, naming the first field at fault, if an id repeats or a
        given vector does not fit ``version``'s item space (its width, its model)."""
        seen: set[str] = set()
        for i, rec in enumerate(records):
            if rec.item_id in seen:
                raise InvalidField(names.format(i=i) + "id",
                                   f"duplicate item id {rec.item_id!r}")
            seen.add(rec.item_id)
        for i, vec in enumerate(vectors):
            if vec is None:
                continue
            if vec.model_id != version.model_id:
                raise InvalidField(
                    names.format(i=i) + "vector_model",
                    f"is {vec.model_id!r}, but the item space is {version.model_id!r} (the "
                    "active encoder, which also encodes users' texts): vectors of another "
                    "model would not be comparable")
            if vec.dim != version.dim:
                raise InvalidField(
                    names.format(i=i) + vec.field,
                    f"has {vec.dim} numbers, the item space ({version.model_id}) has "
                    f"{version.dim}")

    async def _upsert_chunk(
        self, version: EncoderVersion, chunk: Sequence[ItemRecord],
        vectors: Sequence[ItemVector | None], counts: dict[str, int],
    ) -> list[StoredItem]:
        """The rows of ``chunk`` to write (encoded or given), counted in ``counts``."""
        model = version.model_id
        ids = [r.item_id for r in chunk]
        existing: Mapping[str, tuple[str, str | None] | tuple[str, str | None, bytes]]
        with_vectors = any(v is not None for v in vectors)
        if with_vectors and isinstance(self.store, VectorReads):
            existing = await self.store.existing_vectors(ids)
        else:
            existing = await self.store.existing(ids)
        to_encode: list[ItemRecord] = []
        given: list[StoredItem] = []
        for rec, vec in zip(chunk, vectors, strict=True):
            old = existing.get(rec.item_id)
            same = old is not None and old[:2] == (item_text(rec), model)
            if vec is not None and same:
                # A store that cannot show its vectors gets the given one written again.
                same = old is not None and len(old) == 3 and old[2] == vec.stored_bytes()
            if same:
                counts["unchanged"] += 1
                continue
            counts["inserted" if old is None else "updated"] += 1
            if vec is None:
                to_encode.append(rec)
            else:
                given.append(StoredItem(rec, vec.values, model))
        written = given
        if to_encode:
            encoded = await self._encode(
                version, version.prompts.passages([item_text(r) for r in to_encode]))
            written = given + [StoredItem(r, v, model)
                               for r, v in zip(to_encode, encoded, strict=True)]
        counts["encoded"] += len(to_encode)
        counts["given"] += len(given)
        return written

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
