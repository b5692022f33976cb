"""ProfileShard: the Ray actor process that hosts many logical user actors.

Ray gives each actor its own process (~49 MiB and a slice of a core even when idle, measured
here), so one Ray actor per user cannot hold millions of users; N shards host users placed by
rendezvous hashing (:mod:`portrait.routing`) in a :class:`actors.host.UserHost` each. Ray
restarts a shard that dies (``max_restarts=-1``); it comes back empty and re-activates users
from snapshots and the log on first use, so nothing acknowledged is lost.

Events cross the process boundary as msgpack bytes (the codec's), results as plain dicts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import ray

from actors.catalog_registry import get_or_create_registry
from actors.host import HostSettings, UserHost
from actors.text_features import TextFeatureSource
from portrait import codec
from portrait.config import ProfileConfig
from portrait.errors import PortraitError
from portrait.inspection import diff, summarize
from portrait.interests import TagVocabulary
from portrait.items import ItemIndex
from portrait.ranking import TagTable, recommend
from portrait.variants import VariantPolicy

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShardSettings:
    """Everything a shard needs to build its adapters; plain data so Ray can ship it."""

    database_url: str
    variants: VariantPolicy = field(default_factory=lambda: VariantPolicy.single(ProfileConfig()))
    host: HostSettings = HostSettings()
    passivation_interval_s: float = 30.0


@dataclass
class CatalogView:
    """The catalog as ranking needs it, rebuilt whenever the catalog version changes."""

    version: int
    items: ItemIndex
    tags: TagTable
    popularity: np.ndarray | None
    vocabulary: TagVocabulary | None
    titles: list[str]  # by item row; served with recommendations without a database trip


def error_dict(exc: PortraitError) -> dict[str, Any]:
    """A Portrait error as data, so the HTTP layer can map it without unpickling classes."""
    out: dict[str, Any] = {"error": type(exc).__name__, "message": str(exc)}
    if hasattr(exc, "field"):
        out["field"] = exc.field
    return out


@ray.remote(max_restarts=-1, max_task_retries=0, num_cpus=0)
class ProfileShard:
    """Hosts the users that rendezvous hashing places on this shard."""

    def __init__(self, name: str, settings: ShardSettings, encoder_handle: Any) -> None:
        self.name = name
        self._settings = settings
        self._encoder_handle = encoder_handle
        self._host: UserHost | None = None
        self._catalog: CatalogView | None = None
        self._engine: Any = None
        self._start_lock = asyncio.Lock()
        self._janitor: asyncio.Task[None] | None = None
        self._rec_seconds = 0.0
        self._rec_count = 0

    async def _start(self) -> None:
        # Imported here: these pull in SQLAlchemy and the Serve client, which only the actor
        # process needs.
        from serve.encoder_deployment import EncoderClient
        from storage.database import create_engine
        from storage.postgres import PostgresEventLog, PostgresSnapshotStore
        from storage.text_features import PostgresTextFeatureStore

        self._engine = create_engine(self._settings.database_url, pool_size=4)
        encoder = await EncoderClient(self._encoder_handle).connect()
        texts = TextFeatureSource(PostgresTextFeatureStore(self._engine), encoder)
        await self.refresh_catalog()
        self._host = UserHost(
            PostgresEventLog(self._engine),
            PostgresSnapshotStore(self._engine),
            texts,
            self._items,
            self._settings.variants,
            self._settings.host,
        )
        self._janitor = asyncio.get_running_loop().create_task(self._passivation_loop())

    def _items(self) -> ItemIndex:
        assert self._catalog is not None
        return self._catalog.items

    async def refresh_catalog(self) -> int:
        """Install the registry's current catalog if newer than ours. Returns our version."""
        version, refs = await get_or_create_registry().current.remote()
        if not refs:
            raise RuntimeError("no catalog has been published yet")
        if self._catalog is not None and self._catalog.version >= version:
            return self._catalog.version
        index_parts, extras = await asyncio.gather(*refs)
        ids, matrix, tags, model_id = index_parts
        items = ItemIndex(ids, matrix, tags, model_id=model_id)
        popularity, vocab_names, vocab_matrix, titles = extras
        vocabulary = TagVocabulary(tuple(vocab_names), vocab_matrix) if vocab_names else None
        self._catalog = CatalogView(version, items, TagTable(items), popularity, vocabulary, titles)
        return version

    async def _passivation_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.passivation_interval_s)
            try:
                assert self._host is not None
                await self._host.passivate_idle()
                await self.refresh_catalog()  # catches a missed catalog notification
            except Exception:
                _log.exception("passivation pass failed")

    async def _ready(self) -> UserHost:
        """Start on first use: also after Ray restarted this actor in a fresh process."""
        if self._host is None:
            async with self._start_lock:
                if self._host is None:
                    await self._start()
        assert self._host is not None
        return self._host

    async def ingest(self, batches: dict[str, list[bytes]]) -> dict[str, Any]:
        """Append and fold each user's batch; per user either results or an error dict."""
        host = await self._ready()
        out: dict[str, Any] = {}
        decoded = {}
        for user_id, payloads in batches.items():
            try:
                decoded[user_id] = [codec.decode(p) for p in payloads]
            except PortraitError as exc:
                out[user_id] = error_dict(exc)
        for user_id, outcome in (await host.ingest_many(decoded)).items():
            out[user_id] = (
                error_dict(outcome) if isinstance(outcome, PortraitError)
                else [{"event_id": r.event_id, "seq": r.seq, "position": r.position,
                       "duplicate": r.duplicate} for r in outcome]
            )
        return out

    async def recommend(
        self, user_id: str, k: int, diversity: float, tags: list[str], exclude: list[str]
    ) -> dict[str, Any]:
        host = await self._ready()
        started = time.perf_counter()
        try:
            state = await host.state(user_id)
            cat = self._catalog
            assert cat is not None
            variant = host.variants.for_user(user_id)
            recs = recommend(
                state, variant.profile, variant.ranking, cat.items, cat.tags, k,
                popularity=cat.popularity, exclude=exclude, tags=tags, diversity=diversity,
            )
        except PortraitError as exc:
            return error_dict(exc)
        self._rec_seconds += time.perf_counter() - started
        self._rec_count += 1
        return {
            "user_id": user_id,
            "variant": variant.name,
            "as_of_seq": state.last_seq,
            "items": [
                {"item_id": r.item_id, "score": round(r.score, 6),
                 "title": cat.titles[cat.items.row(r.item_id)] or None,
                 "reasons": [{"kind": x.kind, "value": x.value, "weight": x.weight} for x in r.reasons]}
                for r in recs
            ],
        }

    async def profile(
        self, user_id: str, at_seq: int | None, at_time: float | None, top: int
    ) -> dict[str, Any]:
        host = await self._ready()
        try:
            if at_seq is None and at_time is None:
                state = await host.state(user_id)
            else:
                state = await host.state_at(user_id, until_seq=at_seq, until_time=at_time)
        except PortraitError as exc:
            return error_dict(exc)
        vocab = self._catalog.vocabulary if self._catalog else None
        return {
            **summarize(state, host.config(user_id), top=top, vocabulary=vocab),
            "variant": host.variants.for_user(user_id).name,
        }

    async def changes(
        self, user_id: str, from_seq: int, to_seq: int | None, top: int
    ) -> dict[str, Any]:
        host = await self._ready()
        try:
            before = await host.state_at(user_id, until_seq=from_seq)
            after = (
                await host.state(user_id) if to_seq is None
                else await host.state_at(user_id, until_seq=to_seq)
            )
        except PortraitError as exc:
            return error_dict(exc)
        return diff(before, after, host.config(user_id), top=top).to_dict()

    async def stats(self) -> dict[str, Any]:
        host = await self._ready()
        return {
            **asdict(host.stats),
            "active_users": host.active_users,
            "active_bytes": host.active_bytes,
            "commits": host.commits,
            "recommendations": self._rec_count,
            "recommendation_seconds": self._rec_seconds,
        }

    async def pid(self) -> int:
        """This shard's OS process (benchmarks read its memory)."""
        import os

        return os.getpid()

    async def passivate_all(self) -> None:
        host = await self._ready()
        await host.passivate_all()

    async def ready(self) -> bool:
        """Start (if needed) and report readiness; the ingress calls it at start-up."""
        await self._ready()
        return True
