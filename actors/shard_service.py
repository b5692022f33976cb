"""One shard's behaviour, without Ray: the users placed on it, and what callers ask of them.

:class:`ShardService` hosts a :class:`~actors.host.UserHost` and the current catalog view.
Its methods return domain values or raise :class:`~portrait.errors.PortraitError` (which
pickles, so a Ray caller gets the same exception). :class:`actors.shard.ProfileShard` runs it
as a Ray actor; the in-process system (tests, benchmarks) calls it directly.

Dependencies are opened on first use, in the process that uses them: after Ray restarts a
shard in a fresh process, the first call re-opens its stores and re-reads the catalog.

When the catalog view carries a learned ranker, the variant it was trained for
(:meth:`~portrait.variants.VariantPolicy.learned`) ranks by it
(:func:`portrait.two_stage.recommend_learned`); for a user it has nothing to rank by (no
history), without a ranker, and for an experiment's other variants, the linear blend serves.
Each response says which ranked it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar, cast

import numpy as np

from actors.catalog_view import CatalogFeed, CatalogView, ViewKey
from actors.dependencies import EncoderConnector, HostStores, StoreOpener
from actors.host import HostSettings, Outcome, UserHost
from actors.text_features import TextFeatureSource
from actors.view_indexes import ViewIndexes
from portrait import codec
from portrait.config import ProfileConfig
from portrait.erasure import ErasureRecord
from portrait.errors import NotReady
from portrait.impression import INTERLEAVE
from portrait.inspection import ProfileDiff, diff, summarize
from portrait.interleaving import seed_of, team_draft
from portrait.profile import ProfileState
from portrait.ranking import Reason, Recommendation, recommend
from portrait.retrieval import RetrievalContext
from portrait.routing import Topology
from portrait.two_stage import BLEND, recommend_learned
from portrait.variants import Variant, VariantPolicy
from storage import retry

_log = logging.getLogger(__name__)

_Method = TypeVar("_Method", bound=Callable[..., Awaitable[Any]])


def _counted(method: _Method) -> _Method:
    """Count the call in ``calls_in_flight`` while it runs (the shard's queue depth: calls
    waiting for a user's lock, the group commit or the encoder are all in flight)."""

    @functools.wraps(method)
    async def counted(self: ShardService, *args: Any, **kwargs: Any) -> Any:
        self._calls_in_flight += 1
        try:
            return await method(self, *args, **kwargs)
        finally:
            self._calls_in_flight -= 1

    return cast(_Method, counted)


@dataclass(frozen=True)
class ShardSettings:
    """A shard's policy; plain data so Ray can ship it."""

    variants: VariantPolicy = field(default_factory=lambda: VariantPolicy.single(ProfileConfig()))
    host: HostSettings = HostSettings()
    passivation_interval_s: float = 30.0


@dataclass(frozen=True, slots=True)
class RecommendedItem:
    item_id: str
    score: float
    title: str | None
    reasons: tuple[Reason, ...]


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A user's top items as served: which variant ranked them, as of which event; the
    serving configuration's hash and item-space version (impressions record them); under
    interleaving, the team (variant) that contributed each position; which ranker ordered
    them (``blend``, or ``learned:<item space version>``)."""

    user_id: str
    variant: str
    as_of_seq: int
    items: tuple[RecommendedItem, ...]
    config_hash: str = ""
    item_space: int = -1
    teams: tuple[str, ...] | None = None
    ranker: str = BLEND


@dataclass(frozen=True, slots=True)
class ProfileReport:
    """A profile's summary (see :func:`portrait.inspection.summarize`) and its variant."""

    summary: dict[str, Any]
    variant: str


class ShardService:
    """Hosts the users that rendezvous hashing places on this shard."""

    def __init__(
        self,
        name: str,
        stores: StoreOpener,
        encoder: EncoderConnector,
        catalog: CatalogFeed,
        settings: ShardSettings = ShardSettings(),
        topology: Callable[[], Awaitable[Topology]] | None = None,
        *,
        generation: str = "",
    ) -> None:
        self.name = name
        # Where the cluster's shard set is read at start: a shard Ray restarts must not
        # accept users that moved away from it while it was down.
        self._topology_source = topology
        self._store_opener = stores
        self._encoder_connector = encoder
        self._feed = catalog
        self._settings = settings
        self._generation = generation
        self._stores: HostStores | None = None
        self._host: UserHost | None = None
        self._catalog: CatalogView | None = None
        self._start_lock = asyncio.Lock()
        self._janitor: asyncio.Task[None] | None = None
        self._rec_seconds = 0.0
        self._rec_count = 0
        self._config_hashes: dict[str, str] = {}
        # The variant the learned ranker serves (trained in its configuration); the others
        # of an experiment rank as they are configured.
        learned = settings.variants.learned()
        self._learned_variant = learned.name if learned is not None else None
        # The learned ranker's retrieval context per collaborative share, of one view.
        self._contexts: dict[float, tuple[ViewKey, RetrievalContext]] = {}
        self._indexes = ViewIndexes()  # the view's approximate indexes, when it has them
        self._calls_in_flight = 0
        self._topology = Topology(0, ())  # epoch 0: not told yet, owns everyone

    # -- lifecycle -----------------------------------------------------------------------

    async def _ready(self) -> UserHost:
        """Start on first use: also after Ray restarted this shard in a fresh process."""
        if self._host is None:
            async with self._start_lock:
                if self._host is None:
                    await self._start()
        assert self._host is not None
        return self._host

    async def _start(self) -> None:
        stores = await self._store_opener.open()
        try:
            await self.refresh_catalog()
        except BaseException:
            await stores.close()  # its pool's connections; the next call starts again
            raise
        if self._catalog is None:
            await stores.close()
            # The registry is empty: the cluster's first start, or the registry restarted (its
            # node died) and the ingress has not published again yet (within
            # PORTRAIT_CATALOG_REFRESH_S). A 503 the caller retries; it was a bare 500.
            raise NotReady("no catalog has been published yet; retry shortly")
        self._stores = stores
        self._host = UserHost(
            stores.events,
            stores.snapshots,
            TextFeatureSource(stores.text_features, self._encoder_connector,
                              lambda: self._view().encoder),
            lambda: self._view().items,
            self._settings.variants,
            self._settings.host,
        )
        self._host.owns = self._owns
        if self._topology_source is not None:
            current = await self._topology_source()
            if current.epoch > self._topology.epoch:
                self._topology = current
        self._janitor = asyncio.get_running_loop().create_task(self._passivation_loop())

    async def ready(self) -> bool:
        """Start (if needed); the ingress calls it at start-up and for readiness."""
        await self._ready()
        return True

    async def close(self) -> None:
        """Snapshot every user, stop the janitor and close the stores."""
        if self._host is not None:
            await self._host.passivate_all()
        if self._janitor is not None:
            self._janitor.cancel()
        if self._stores is not None:
            await self._stores.close()
        self._host = self._stores = self._janitor = None

    async def _passivation_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.passivation_interval_s)
            try:
                assert self._host is not None
                await self._host.passivate_idle()
                await self.refresh_catalog()  # catches a missed catalog notification
            except Exception:
                _log.exception("passivation pass failed")

    def _view(self) -> CatalogView:
        assert self._catalog is not None
        return self._catalog

    async def refresh_catalog(self) -> ViewKey:
        """Install the feed's newest catalog view if it is not ours. Returns our view's key
        (catalog version, item-space version, popularity position)."""
        mine = self._catalog
        view = await self._feed.latest(mine)  # ours grown by what we lack, where it can be
        if view is not None:
            if (mine is not None and view.key[:2] == mine.key[:2]
                    and view.base_key == mine.base_key):
                # Only popularity moved: keep our indexes and the copies ranking built of them.
                view = mine.with_popularity(view.popularity, view.popularity_through)
            self._catalog = view
            if (mine is not None and self._host is not None
                    and view.items.model_id != mine.items.model_id):
                # An encoder switch: users' text was folded in the old space. Until this
                # line the shard ranked old states in the old view (consistent); from now
                # on they re-fold in the new one on their next use.
                await self._host.refold_text(view.items.model_id)
        return self._catalog.key if self._catalog is not None else (-1, -1, -1)

    async def _state_in_view(
        self, host: UserHost, user_id: str
    ) -> tuple[ProfileState, CatalogView]:
        """The user's state and a view of the same text space. A switch can land between
        activating a user and reading the view (the state then has the other encoder's
        text): the user is folded again in the current view, never ranked across spaces."""
        for _ in range(3):
            state = await host.state(user_id)
            view = self._view()
            if state.text_acc is None or state.text_model == view.items.model_id:
                return state, view
            await host.refold_text(view.items.model_id)
        raise NotReady("the text encoder is being switched; retry shortly")

    async def catalog_key(self) -> ViewKey:
        """The key of the view this shard ranks with now, without looking for a newer one
        (what a test reads to see whether a publication reached the shard)."""
        return self._catalog.key if self._catalog is not None else (-1, -1, -1)

    async def text_model(self, user_id: str) -> str | None:
        """The encoder of the user's text part as held here now, None without text (what a
        test reads to see a profile re-folded after an encoder switch)."""
        host = await self._ready()
        state, _ = await self._state_in_view(host, user_id)
        return state.text_model

    # -- commands and queries --------------------------------------------------------------

    @_counted
    async def ingest(self, batches: dict[str, list[bytes]]) -> dict[str, Outcome]:
        """Append and fold each user's batch; per user, its results or the error refusing it.

        Payloads are the codec's bytes of events the ingress has already validated; they are
        decoded without a second validation and stored as they are.
        """
        host = await self._ready()
        return await host.ingest_many(
            {
                user: [codec.decode_stored(p) for p in payloads]
                for user, payloads in batches.items()
            },
            payloads=batches,
        )

    @_counted
    async def recommend(
        self, user_id: str, k: int, diversity: float, tags: list[str], exclude: list[str],
        request_id: str = "",
    ) -> Recommendations:
        """The user's top ``k``. Under an interleaving experiment, a team-draft interleaving
        of both variants' lists, its coin seeded by ``request_id`` (the same request gives
        the same list)."""
        host = await self._ready()
        started = time.perf_counter()
        state, view = await self._state_in_view(host, user_id)

        def ranked_by(variant: Variant) -> tuple[list[Recommendation], str]:
            ctx = None
            if variant.name == self._learned_variant:
                ctx = self._retrieval_context(view, variant.items.alpha)
            if ctx is not None and view.ranker is not None:
                learned = recommend_learned(
                    state, variant.profile, variant.ranking, ctx, view.ranker, k,
                    exclude=exclude, tags=tags, diversity=diversity,
                )
                if learned is not None:
                    return learned, view.ranker_name
            return recommend(
                state,
                variant.profile,
                variant.ranking,
                view.items_for(variant.items.alpha),
                view.tags,
                k,
                popularity=view.popularity,
                exclude=exclude,
                tags=tags,
                diversity=diversity,
                ann=self._indexes.catalog(view, variant.items.alpha),
            ), BLEND

        def space_of(variant: Variant) -> int:
            return view.key[1] if variant.items.alpha > 0 else -1

        pair = host.variants.interleaved
        teams: tuple[str, ...] | None = None
        if pair is None:
            variant = host.variants.for_user(user_id)
            ranked, ranker = ranked_by(variant)
            name, config_hash, space = variant.name, self._hash_of(variant), space_of(variant)
        else:
            a, b = pair
            (list_a, ranker_a), (list_b, ranker_b) = ranked_by(a), ranked_by(b)
            by_id = {r.item_id: r for rs in (list_a, list_b) for r in rs}
            ids, teams = team_draft(
                [r.item_id for r in list_a], [r.item_id for r in list_b], k,
                team_a=a.name, team_b=b.name, seed=seed_of(request_id or user_id),
            )
            ranked = [by_id[i] for i in ids]
            name = INTERLEAVE
            config_hash = f"{self._hash_of(a)}+{self._hash_of(b)}"
            space = max(space_of(a), space_of(b))
            ranker = ranker_a if ranker_a == ranker_b else f"{ranker_a}+{ranker_b}"
        out = Recommendations(
            user_id,
            name,
            state.last_seq,
            tuple(
                RecommendedItem(r.item_id, r.score, view.title(r.item_id), r.reasons)
                for r in ranked
            ),
            config_hash,
            space,
            teams,
            ranker,
        )
        self._rec_seconds += time.perf_counter() - started
        self._rec_count += 1
        return out

    def _retrieval_context(self, view: CatalogView, alpha: float) -> RetrievalContext | None:
        """The learned ranker's models over the index variants of share ``alpha`` rank in;
        built once per view and share (its text norms are computed once, on first use), and
        given the new prior when only popularity moved. None when the view has no ranker."""
        ranker = view.ranker
        if ranker is None:
            return None
        cached = self._contexts.get(alpha)
        if cached is not None and cached[0] == view.key:
            return cached[1]
        items = view.items_for(alpha)
        popularity = (view.popularity if view.popularity is not None
                      else np.zeros(len(items), dtype=np.float32))
        if cached is not None and cached[0][:2] == view.key[:2]:
            ctx = cached[1].with_popularity(popularity)
        else:
            ann = self._indexes.catalog(view, alpha)
            ctx = RetrievalContext(items, view.tags, popularity, ranker.cooc, ranker.trans,
                                   ranker.settings.sequence_half_life, ann,
                                   self._indexes.text(view) if ann is not None else None)
        self._contexts[alpha] = (view.key, ctx)
        return ctx

    def _hash_of(self, variant: Variant) -> str:
        known = self._config_hashes.get(variant.name)
        if known is None:
            known = self._config_hashes[variant.name] = variant.config_hash()
        return known

    @_counted
    async def profile(
        self, user_id: str, at_seq: int | None, at_time: float | None, top: int
    ) -> ProfileReport:
        host = await self._ready()
        if at_seq is None and at_time is None:
            state, view = await self._state_in_view(host, user_id)
        else:
            view = self._view()
            state = await host.state_at(user_id, until_seq=at_seq, until_time=at_time)
        variant = host.variants.for_user(user_id)
        return ProfileReport(
            summarize(
                state,
                variant.profile,
                top=top,
                vocabulary=view.vocabulary,
                items=view.items_for(variant.items.alpha),
            ),
            variant.name,
        )

    @_counted
    async def changes(
        self, user_id: str, from_seq: int, to_seq: int | None, top: int
    ) -> ProfileDiff:
        host = await self._ready()
        before = await host.state_at(user_id, until_seq=from_seq)
        after = (
            await host.state(user_id)
            if to_seq is None
            else await host.state_at(user_id, until_seq=to_seq)
        )
        variant = host.variants.for_user(user_id)
        items = self._view().items_for(variant.items.alpha)
        return diff(before, after, variant.profile, top=top, items=items)

    @_counted
    async def erase(self, user_id: str, requested_by: str, now: float) -> ErasureRecord | None:
        """Erase the user: out of this shard's memory, then at rest (see
        :meth:`UserHost.erase`). None when nothing was stored for them."""
        host = await self._ready()
        assert self._stores is not None
        eraser = self._stores.eraser
        return await host.erase(user_id, lambda: eraser.erase(user_id, requested_by, now))

    async def stats(self) -> dict[str, Any]:
        host = await self._ready()
        return {
            **asdict(host.stats),
            "active_users": host.active_users,
            "active_bytes": host.active_bytes,
            "commits": host.commits,
            "pending_events": host.pending_events,
            "calls_in_flight": self._calls_in_flight,
            "topology_epoch": self._topology.epoch,
            **{f"storage_{k}": v for k, v in asdict(retry.COUNTS).items()},
            "recommendations": self._rec_count,
            "recommendation_seconds": self._rec_seconds,
        }

    def _owns(self, user_id: str) -> bool:
        topology = self._topology
        return topology.epoch == 0 or topology.owner(user_id) == self.name

    async def set_topology(self, epoch: int, names: list[str]) -> int:
        """Adopt the shard set of ``epoch`` (an older one is ignored): from now on users that
        another shard owns are refused, and those active here are handed off (snapshotted
        and dropped, after their in-flight calls). Returns once the hand-off is done, so the
        caller may then send those users to their new owner: one writer per user at any
        time. Returns the epoch this shard is at."""
        if epoch > self._topology.epoch:
            self._topology = Topology(epoch, tuple(names))
            host = await self._ready()
            moved = await host.hand_off()
            if moved:
                _log.info("%s: epoch %d, %d users handed off", self.name, epoch, moved)
        return self._topology.epoch

    async def generation(self) -> str:
        """The deployment generation this shard was created for (see actors.generations)."""
        return self._generation

    async def pid(self) -> int:
        """This shard's OS process (benchmarks read its memory)."""
        return os.getpid()

    async def passivate_all(self) -> None:
        host = await self._ready()
        await host.passivate_all()
