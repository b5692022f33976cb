"""Switching the text encoder: a migration, then one atomic flip (no Ray in here).

:meth:`EncoderSwitch.migrate` re-encodes, under the new version and while the old one keeps
serving, every catalog item (into ``item_vectors``) and every text event of the log (into the
text-feature cache, under the new model id). Both skip what is already there (an item vector
made from the item's current text, a cached feature), so a migration killed midway is
resumed by running it again. :meth:`EncoderSwitch.switch` then migrates (a resumed or
catch-up pass), and commits the switch in one transaction (:mod:`storage.encoder_versions`):
items upserted meanwhile make that transaction refuse (nothing changed), they are encoded,
and it is tried again. Until it commits, the old version is the active one everywhere.

Serving learns of the switch by a new catalog view (the catalog's version moved with the
vectors); shards then re-fold their users' text from the log under the new version
(:mod:`actors.shard_service`). A rollback is a switch back to the previous version, whose
item vectors and cached features are still stored: nothing to encode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from actors.text_features import encode_features, text_digest
from portrait.catalog import item_text
from portrait.encoder_versions import (
    BASE_VERSION,
    ActiveEncoder,
    EncoderVersion,
    EncoderVersionStore,
    items_to_encode,
)
from portrait.encoder_versions import text_digest as item_digest
from portrait.errors import InvalidField
from portrait.events import event_text
from portrait.ports import AsyncEncoder, EventLog, TextFeatureStore, TextKey
from portrait.progress import Progress
from storage.encoder_versions import StaleItems

_log = logging.getLogger(__name__)

READ_PAGE = 5_000  # log events per read
ITEM_CHUNK = 256  # items per encoder call and write
TEXT_CHUNK = 128  # text events per encoder call (their keyword phrases ride along)
SWITCH_ATTEMPTS = 5  # catch-up rounds before giving up (items keep changing under us)


class SwitchStores(Protocol):
    events: EventLog
    text_features: TextFeatureStore
    encoder_versions: EncoderVersionStore


@dataclass
class MigrationStatus:
    """Where a migration is (``GET /v1/encoder``, the CLI's bars)."""

    target: str | None = None
    phase: str = "idle"  # idle | items | texts | switching | done | failed
    items_done: int = 0
    items_total: int = 0
    items_encoded: int = 0
    texts_seen: int = 0
    texts_encoded: int = 0
    log_position: int = 0
    seconds: float = 0.0
    items_seconds: float = 0.0
    error: str | None = None
    figures: dict[str, float] = field(default_factory=dict)


class EncoderSwitch:
    """Migrates to and switches between encoder versions; see the module docstring.

    Args:
        stores: the log, the text-feature cache and the encoder-version store.
        encoder: the base encoder, able to encode with a named version (``encode_for``).
        base: the base version (version 0: the encoder the settings name).
        clock: Unix seconds (when a version was activated).
        item_chunk, text_chunk: items and text events per encoder call.
    """

    def __init__(
        self, stores: SwitchStores, encoder: AsyncEncoder, base: EncoderVersion,
        clock: Callable[[], float] = time.time, *, item_chunk: int = ITEM_CHUNK,
        text_chunk: int = TEXT_CHUNK,
    ) -> None:
        self._stores = stores
        self._versions = stores.encoder_versions
        self._encoder = encoder
        self.base = base
        self._clock = clock
        self._item_chunk, self._text_chunk = item_chunk, text_chunk
        self.status = MigrationStatus()

    async def version(self, name: str) -> EncoderVersion:
        """The version called ``name`` ('base' is the shipped encoder)."""
        if name in ("base", self.base.name, self.base.model_id):
            return self.base
        found = await self._versions.by_name(name)
        if found is None:
            raise InvalidField("name", f"no encoder version called {name!r}")
        return found

    async def active(self) -> tuple[EncoderVersion, ActiveEncoder]:
        pointer = await self._versions.active()
        if pointer.version == BASE_VERSION:
            return self.base, pointer
        found = await self._versions.get(pointer.version)
        if found is None:
            raise InvalidField("encoder", f"active version {pointer.version} is not registered")
        return found, pointer

    async def migrate(self, target: EncoderVersion, progress: Progress | None = None) -> None:
        """Encode what ``target`` lacks (items, then the log's texts); resumable."""
        if target.state == "retired":
            raise InvalidField("name", f"encoder version {target.name!r} is retired")
        status = self.status = MigrationStatus(target=target.name, phase="items")
        started = time.perf_counter()
        if not target.is_base and target.state == "registered":
            await self._versions.set_state(target.version, "migrating")
        try:
            await self._migrate_items(target, progress)
            status.items_seconds = time.perf_counter() - started
            status.phase = "texts"
            await self._migrate_texts(target, progress)
        except BaseException as exc:
            status.phase = "failed"
            status.error = f"{type(exc).__name__}: {exc}"[:300]
            raise
        finally:
            status.seconds = time.perf_counter() - started
        if not target.is_base and target.state in ("registered", "migrating"):
            await self._versions.set_state(target.version, "ready")
        status.phase = "done"

    async def _migrate_items(self, target: EncoderVersion, progress: Progress | None) -> None:
        records = await self._versions.item_records()
        plan = items_to_encode(records, await self._versions.item_digests(target.model_id))
        await self._encode_items(target, plan.items, plan.items_total, progress)

    async def _encode_items(
        self, target: EncoderVersion, records: Sequence[Any], total: int,
        progress: Progress | None,
    ) -> None:
        status = self.status
        status.items_total, status.items_done = total, total - len(records)
        for start in range(0, len(records), self._item_chunk):
            chunk = records[start:start + self._item_chunk]
            texts = [item_text(r) for r in chunk]
            vectors = await self._encode(target, target.prompts.passages(texts))
            await self._versions.put_item_vectors(target.model_id, [
                (r.item_id, v, item_digest(t))
                for r, v, t in zip(chunk, vectors, texts, strict=True)])
            status.items_done += len(chunk)
            status.items_encoded += len(chunk)
            if progress is not None:
                progress(status.items_done, total)

    async def _encode(self, target: EncoderVersion, texts: list[str]) -> Any:
        if target.model_id == self._encoder.model_id:
            return await self._encoder.encode(texts)
        encode_for = getattr(self._encoder, "encode_for", None)
        if encode_for is None:
            raise InvalidField("encoder", "this encoder cannot encode with another version")
        return await encode_for(target, texts)

    async def _migrate_texts(self, target: EncoderVersion, progress: Progress | None) -> None:
        """Every text event of the log (erased users' are not readable, so never encoded)
        into the cache under ``target``'s model id, skipping those cached already."""
        status = self.status
        events, cache = self._stores.events, self._stores.text_features
        after = 0
        while page := await events.read_all(after_position=after, limit=READ_PAGE):
            after = page[-1].position
            texts = {TextKey(e.user_id, e.event_id, text_digest(t)): t
                     for rec in page if (t := event_text(e := rec.event)) is not None}
            status.texts_seen += len(texts)
            if texts:
                cached = await cache.get_many(list(texts), target.model_id)
                todo = [k for k in texts if k not in cached]
                for start in range(0, len(todo), self._text_chunk):
                    keys = todo[start:start + self._text_chunk]
                    features = await encode_features(
                        self._encoder, target, [texts[k] for k in keys])
                    await cache.put_many(dict(zip(keys, features, strict=True)),
                                         target.model_id)
                    status.texts_encoded += len(keys)
            status.log_position = after
            if progress is not None:
                progress(status.texts_seen, status.texts_seen)

    async def switch(self, target: EncoderVersion, progress: Progress | None = None
                     ) -> ActiveEncoder:
        """Migrate (resuming), then make ``target`` active in one transaction."""
        await self.migrate(target, progress)
        self.status.phase = "switching"
        for _ in range(SWITCH_ATTEMPTS):
            try:
                pointer = await self._versions.switch(target, self._clock())
            except StaleItems as stale:  # upserted during the migration: catch up, retry
                _log.info("encoder switch: %d items changed meanwhile, encoding them",
                          len(stale.item_ids))
                await self._migrate_items(target, None)
                continue
            self.status.phase = "done"
            _log.info("encoder %s active (was version %s)", target.name, pointer.previous)
            return pointer
        self.status.phase = "failed"
        raise InvalidField("items", "the catalog kept changing during the switch; run it again")

    async def rollback(self, progress: Progress | None = None) -> ActiveEncoder:
        """Switch back to the version active before the last switch."""
        pointer = await self._versions.active()
        if pointer.previous is None:
            raise InvalidField("encoder", "no previous encoder version to roll back to")
        previous = (self.base if pointer.previous == BASE_VERSION
                    else await self._versions.get(pointer.previous))
        if previous is None:
            raise InvalidField("encoder", f"version {pointer.previous} is not registered")
        return await self.switch(previous, progress)


__all__ = ["EncoderSwitch", "MigrationStatus", "SwitchStores"]
