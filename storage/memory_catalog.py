"""The catalog held in process memory: shipped code, the ``memory://`` store's catalog."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from portrait.catalog import ItemRecord, item_text
from portrait.events import POSITIVE_ITEM_TYPES, ItemEvent
from portrait.ports import Eraser, EventLog, ItemChanges, ItemVectors, StoredItem

_PAGE = 10_000


class InMemoryCatalogStore:
    """A :class:`~portrait.ports.CatalogStore` in a dict; popularity is counted from
    ``events`` (the event log of the same store set)."""

    def __init__(self, events: EventLog, eraser: Eraser | None = None) -> None:
        self._events = events
        self._eraser = eraser
        self._items: dict[str, StoredItem] = {}
        self._writes = itertools.count(1)
        self._version = 0
        self._stamps: dict[str, int] = {}  # item id -> the write that last changed it

    async def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        found = (self._items.get(i) for i in ids)
        return {s.record.item_id: (item_text(s.record), s.model_id) for s in found if s}

    async def existing_vectors(
        self, ids: Sequence[str]
    ) -> dict[str, tuple[str, str | None, bytes]]:
        """:meth:`existing` with each item's stored vector bytes (little-endian float32)."""
        found = (self._items.get(i) for i in ids)
        return {s.record.item_id: (item_text(s.record), s.model_id,
                                   np.asarray(s.vector, dtype="<f4").tobytes())
                for s in found if s}

    async def write(self, items: Sequence[StoredItem]) -> None:
        if not items:
            return
        self._version = next(self._writes)
        for item in items:
            self._items[item.record.item_id] = item
            self._stamps[item.record.item_id] = self._version

    def stored(self) -> list[StoredItem]:
        """Every item as stored (what :mod:`storage.encoder_versions` switches)."""
        return list(self._items.values())

    async def get(self, item_id: str) -> ItemRecord | None:
        stored = self._items.get(item_id)
        return stored.record if stored else None

    async def not_embedded_by(self, model_id: str) -> list[ItemRecord]:
        return [s.record for s in self._items.values() if s.model_id != model_id]

    async def vectors(self, model_id: str, dim: int) -> ItemVectors:
        chosen = sorted(
            (s for s in self._items.values() if s.model_id == model_id),
            key=lambda s: s.record.item_id,
        )
        matrix = (
            np.stack([np.asarray(s.vector, np.float32) for s in chosen])
            if chosen else np.zeros((0, dim), np.float32)
        )
        return ItemVectors(
            [s.record.item_id for s in chosen], matrix, [s.record.tags for s in chosen]
        )

    async def version(self) -> int:
        return self._version

    async def changed_since(self, version: int, model_id: str, dim: int) -> ItemChanges:
        # Writes here are atomic and in order: no skew to look back over.
        chosen = sorted(
            (s for i, s in self._items.items()
             if self._stamps[i] > version and s.model_id == model_id),
            key=lambda s: s.record.item_id,
        )
        matrix = (np.stack([np.asarray(s.vector, np.float32) for s in chosen])
                  if chosen else np.zeros((0, dim), np.float32))
        return ItemChanges(
            [s.record.item_id for s in chosen], matrix, [s.record.tags for s in chosen],
            [s.record.title for s in chosen],
            np.array([self._stamps[s.record.item_id] for s in chosen], dtype=np.int64))

    async def titles(self) -> dict[str, str]:
        return {i: s.record.title for i, s in self._items.items()}

    async def erasure_count(self) -> int:
        return 0 if self._eraser is None else await self._eraser.erasure_count()

    async def interaction_counts(self, after_position: int = 0) -> tuple[dict[str, int], int]:
        counts: dict[str, int] = {}
        after = through = after_position
        while page := await self._events.read_all(after_position=after, limit=_PAGE):
            for rec in page:
                e = rec.event
                if isinstance(e, ItemEvent) and e.TYPE in POSITIVE_ITEM_TYPES:
                    counts[e.item_id] = counts.get(e.item_id, 0) + 1
                    through = rec.position
            after = page[-1].position
        return counts, through
