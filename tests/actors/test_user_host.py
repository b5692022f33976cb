"""The user host without Ray: activation, group commit, snapshots, passivation, cancellation.

Every test runs twice through the ``stores`` fixture: on the in-memory adapters and on the
embedded Postgres, so the host is held to the same behaviour on both.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.dependencies import ConnectedEncoder
from actors.host import HostSettings, UserHost
from actors.text_features import TextFeatureSource, ThreadedEncoder
from portrait.config import ProfileConfig
from portrait.errors import EncoderUnavailable, EventIdConflict
from portrait.events import (
    Event,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    RecordedEvent,
    SearchPerformed,
)
from portrait.fold import replay
from portrait.items import ItemIndex
from portrait.ports import AsyncEncoder, EventLog, Snapshot, SnapshotStore, TextFeatureStore
from portrait.profile import ProfileState
from portrait.variants import VariantPolicy
from storage.memory import InMemoryEventLog, InMemorySnapshotStore
from storage.postgres import PostgresEventLog
from storage.postgres_snapshots import PostgresSnapshotStore
from storage.text_features import InMemoryTextFeatureStore, PostgresTextFeatureStore
from tests.fakes import HashingEncoder
from tests.unit.builders import catalog
from tests.unit.test_profile import assert_same_profile

T0 = 1_600_000_000.0
CONFIG = ProfileConfig()
ENCODER = HashingEncoder(dim=16)
ITEMS: ItemIndex = catalog(dim=16)


@dataclass
class Stores:
    """One backend's adapters, shared by every host a test builds (a restarted process
    sees the same database)."""

    log: EventLog
    snapshots: SnapshotStore
    text_cache: TextFeatureStore

    def texts(self, encoder: AsyncEncoder | None = None) -> TextFeatureSource:
        connector = ConnectedEncoder(encoder or ThreadedEncoder(ENCODER))
        return TextFeatureSource(self.text_cache, connector)


@pytest.fixture(params=["memory", "postgres"])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The host's adapters: in memory, or on the embedded Postgres (tables emptied)."""
    if request.param == "memory":
        return Stores(InMemoryEventLog(), InMemorySnapshotStore(), InMemoryTextFeatureStore())
    # Requested only here, so the in-memory runs never start a Postgres server.
    engine: AsyncEngine = request.getfixturevalue("embedded_engine")
    return Stores(
        PostgresEventLog(engine), PostgresSnapshotStore(engine), PostgresTextFeatureStore(engine)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_host(
    stores: Stores,
    clock: Callable[[], float] | None = None,
    *,
    log: EventLog | None = None,
    variants: VariantPolicy | None = None,
    texts: TextFeatureSource | None = None,
    **settings: Any,
) -> UserHost:
    return UserHost(
        log or stores.log, stores.snapshots, texts or stores.texts(), lambda: ITEMS,
        variants or VariantPolicy.single(CONFIG), HostSettings(**settings),
        clock=clock or Clock(),
    )


async def settle(host: UserHost) -> None:
    """Wait for the host's background snapshot writes (reaching into it: tests only)."""
    await host._snapshotter.drain()


def views(user: str, start: int, n: int) -> list[Event]:
    return [ItemViewed(f"{user}-e{i}", user, T0 + i, f"i{i % 30}") for i in range(start, start + n)]


async def fresh_replay(stores: Stores, user: str) -> ProfileState:
    events = await stores.log.read(user)
    texts = await TextFeatureSource(
        InMemoryTextFeatureStore(), ConnectedEncoder(ThreadedEncoder(ENCODER))
    ).features_for(r.event for r in events)
    return replay(events, CONFIG, ITEMS, texts.get(user, {}), user_id=user)


async def test_ingest_is_durable_folded_and_idempotent(stores: Stores) -> None:
    host = make_host(stores)
    first = await host.ingest(
        "u", views("u", 0, 3) + [SearchPerformed("u-s", "u", T0 + 9, "noir detective")]
    )
    assert [r.seq for r in first] == [1, 2, 3, 4] and not any(r.duplicate for r in first)
    again = await host.ingest("u", views("u", 2, 2))  # e2 is a duplicate, e3 new
    assert [(r.seq, r.duplicate) for r in again] == [(3, True), (5, False)]
    state = await host.state("u")
    assert state.event_count == 5 and await stores.log.version("u") == 5
    assert_same_profile(state, await fresh_replay(stores, "u"))
    assert host.stats.duplicates == 1


async def test_many_users_share_group_commits(stores: Stores) -> None:
    host = make_host(stores, group_commit_window_s=0.01)
    await asyncio.gather(*(host.ingest(f"u{k}", views(f"u{k}", 0, 2)) for k in range(20)))
    assert host.commits < 20
    assert all([await stores.log.version(f"u{k}") for k in range(20)])


async def test_concurrent_ingests_for_one_user_stay_ordered(stores: Stores) -> None:
    host = make_host(stores)
    await asyncio.gather(*(host.ingest("u", views("u", 10 * k, 10)) for k in range(8)))
    recorded = await stores.log.read("u")
    assert [r.seq for r in recorded] == list(range(1, 81))
    assert len({r.event.event_id for r in recorded}) == 80
    assert_same_profile(await host.state("u"), await fresh_replay(stores, "u"))


async def test_snapshots_every_k_and_reactivation_from_snapshot_plus_tail(stores: Stores) -> None:
    host = make_host(stores, snapshot_every=10)
    for k in range(5):
        await host.ingest("u", views("u", 7 * k, 7))
    await settle(host)
    snap = await stores.snapshots.latest("u", CONFIG.config_hash())
    assert snap is not None and snap.seq >= 10
    before = await host.state("u")
    other = make_host(stores)  # a fresh process: activation from the snapshot + tail
    after = await other.state("u")
    assert other.stats.replayed_events == 35 - snap.seq
    assert_same_profile(before, after)


async def test_idle_and_budget_passivation_keep_state(stores: Stores) -> None:
    clock = Clock()
    host = make_host(stores, clock, idle_timeout_s=60, snapshot_min_tail=3)
    await host.ingest("a", views("a", 0, 3))
    clock.now = 30
    await host.ingest("b", views("b", 0, 3))
    clock.now = 80
    assert await host.passivate_idle() == 1  # only "a" idled past 60 s
    assert host.active_users == 1
    snap = await stores.snapshots.latest("a", CONFIG.config_hash())
    assert snap is not None and snap.seq == 3
    assert (await host.state("a")).event_count == 3  # re-activated from the snapshot
    tiny = make_host(stores, memory_budget_bytes=1)
    await tiny.state("a")
    await tiny.ingest("b", views("b", 3, 1))
    # Both are larger than a 1-byte budget on their own: neither is kept.
    assert tiny.active_users == 0 and tiny.stats.passivations >= 2
    assert (await tiny.state("b")).event_count == 4


async def test_a_short_tail_is_not_snapshotted_on_passivation(stores: Stores) -> None:
    """Most users of a large system have a few events: a snapshot per passivated user was
    most of the database at 1M users. Under ``snapshot_min_tail`` the log is the snapshot."""
    clock = Clock()
    host = make_host(stores, clock, idle_timeout_s=60, snapshot_every=10, snapshot_min_tail=4)
    await host.ingest("few", views("few", 0, 3))
    await host.ingest("many", views("many", 0, 12))  # snapshot due at 10 (every 10)
    await settle(host)
    clock.now = 100
    assert await host.passivate_idle() == 2
    assert await stores.snapshots.latest("few", CONFIG.config_hash()) is None
    snap = await stores.snapshots.latest("many", CONFIG.config_hash())
    assert snap is not None and snap.seq == 12  # came due at 10 (written with all 12)
    await host.ingest("many", views("many", 12, 2))
    clock.now = 200
    assert await host.passivate_idle() == 1  # a 2-event tail: the snapshot at 12 stays
    assert (await stores.snapshots.latest("many", CONFIG.config_hash())).seq == 12
    fresh = make_host(stores)
    for user, count in (("few", 3), ("many", 14)):
        state = await fresh.state(user)
        assert state.event_count == count
        assert_same_profile(state, await fresh_replay(stores, user))
    assert fresh.stats.replayed_events == 3 + 2


async def test_cancelled_caller_does_not_lose_an_acknowledged_batch(stores: Stores) -> None:
    host = make_host(stores, group_commit_window_s=0.05)
    task = asyncio.create_task(host.ingest("u", views("u", 0, 4)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The shielded append holds the user's lock until it has folded: state() waits for it.
    assert (await host.state("u")).event_count == 4
    assert await stores.log.version("u") == 4


async def test_time_travel_matches_replay_to_that_point(stores: Stores) -> None:
    host = make_host(stores, snapshot_every=5)
    events: list[Event] = [
        ItemRated(f"e{i}", "u", T0 + i * 3600, f"i{i % 30}", rating=float(1 + i % 5))
        for i in range(20)
    ]
    events.append(ItemPurchased("p", "u", T0 + 99 * 3600, "i3"))
    for k in range(0, 21, 7):
        await host.ingest("u", events[k : k + 7])
    await settle(host)
    at = await host.state_at("u", until_seq=12)
    expect = replay(await stores.log.read("u", until_seq=12), CONFIG, ITEMS, user_id="u")
    assert_same_profile(at, expect)
    by_time = await host.state_at("u", until_time=T0 + 5.5 * 3600)
    assert by_time.event_count == 6


async def test_each_variant_folds_and_snapshots_under_its_own_config(stores: Stores) -> None:
    from portrait.experiments import Experiment
    from portrait.ranking import RankingConfig
    from portrait.variants import Variant

    fast = ProfileConfig(short_half_life_days=0.01)
    policy = VariantPolicy(
        {"a": Variant("a", CONFIG, RankingConfig()), "b": Variant("b", fast, RankingConfig())},
        Experiment("exp", (("a", 1), ("b", 1))),
    )
    users = {policy.for_user(f"v{i}").name: f"v{i}" for i in range(20)}
    host = make_host(stores, variants=policy, snapshot_every=1)
    for name, user in users.items():
        await host.ingest(user, views(user, 0, 3))
        expect = replay(
            await stores.log.read(user), policy.variants[name].profile, ITEMS, user_id=user
        )
        assert_same_profile(await host.state(user), expect, policy.variants[name].profile)
    await settle(host)
    assert await stores.snapshots.latest(users["b"], fast.config_hash()) is not None
    assert await stores.snapshots.latest(users["b"], CONFIG.config_hash()) is None


async def test_idle_committer_batches_whatever_queues_during_a_flush(stores: Stores) -> None:
    host = make_host(stores)  # no window: a lone event is written at once
    await host.ingest("solo", views("solo", 0, 1))
    assert host.commits == 1
    await asyncio.gather(*(host.ingest(f"u{k}", views(f"u{k}", 0, 2)) for k in range(20)))
    assert host.commits < 1 + 20


async def test_one_call_for_many_users_commits_once_and_keeps_users_apart(stores: Stores) -> None:
    host = make_host(stores)
    await host.ingest("b", views("b", 0, 2))
    commits = host.commits
    # "b" re-sends e0 with different content: its batch is refused, nobody else's is.
    clash = [ItemViewed("b-e0", "b", T0, "i29"), *views("b", 2, 1)]
    out = await host.ingest_many({"a": views("a", 0, 3), "b": clash, "c": views("c", 0, 1)})
    assert host.commits == commits + 1
    assert isinstance(out["b"], EventIdConflict)
    a, c = out["a"], out["c"]
    assert isinstance(a, list) and isinstance(c, list)
    assert [r.seq for r in a] == [1, 2, 3] and [r.seq for r in c] == [1]
    assert await stores.log.version("b") == 2
    for user in ("a", "b", "c"):
        assert_same_profile(await host.state(user), await fresh_replay(stores, user))


async def test_encoder_outage_refuses_only_users_with_text(stores: Stores) -> None:
    class DownEncoder:
        model_id, dim = ENCODER.model_id, ENCODER.dim

        async def encode(self, texts: Sequence[str]) -> Any:
            raise EncoderUnavailable("encoder is down")

    host = make_host(stores, texts=stores.texts(DownEncoder()))
    search: list[Event] = [SearchPerformed("t-s", "t", T0, "space opera")]
    out = await host.ingest_many({"t": search, "v": views("v", 0, 2)})
    assert isinstance(out["t"], EncoderUnavailable) and await stores.log.version("t") == 0
    assert len(out["v"]) == 2 and (await host.state("v")).event_count == 2


async def test_an_unreachable_encoder_is_connected_when_text_first_needs_it(
    stores: Stores,
) -> None:
    """Shards used to connect to the encoder when they started, so with the encoder down no
    user could be served at all. Now the connection is made on the first text event, refused
    as unavailable (503) while it fails, and retried on the next."""

    class Connector:
        attempts = 0
        up = False

        async def connect(self) -> Any:
            self.attempts += 1
            if not self.up:
                raise ConnectionError("no encoder deployment")
            return ThreadedEncoder(ENCODER)

    connector = Connector()
    host = make_host(stores, texts=TextFeatureSource(stores.text_cache, connector))
    out = await host.ingest_many({"v": views("v", 0, 2)})
    assert len(out["v"]) == 2 and connector.attempts == 0  # no text: no encoder needed
    search: list[Event] = [SearchPerformed("t-s", "t", T0, "space opera")]
    out = await host.ingest_many({"t": search})
    assert isinstance(out["t"], EncoderUnavailable) and await stores.log.version("t") == 0
    connector.up = True
    out = await host.ingest_many({"t": search})
    assert [r.seq for r in out["t"]] == [1] and connector.attempts == 2  # type: ignore[union-attr]


async def test_overlapping_multi_user_calls_neither_deadlock_nor_reorder(stores: Stores) -> None:
    host = make_host(stores, group_commit_window_s=0.001)
    calls = [
        {u: views(u, 10 * k, 10) for u in (["x", "y", "z"] if k % 2 else ["z", "y", "x"])}
        for k in range(6)
    ]
    await asyncio.wait_for(asyncio.gather(*(host.ingest_many(c) for c in calls)), timeout=5)
    for user in ("x", "y", "z"):
        recorded = await stores.log.read(user)
        assert [r.seq for r in recorded] == list(range(1, 61))
        assert_same_profile(await host.state(user), await fresh_replay(stores, user))


class CountingLog:
    """Any event log, counting its tail reads."""

    def __init__(self, inner: EventLog) -> None:
        self._inner = inner
        self.tail_reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read_tails(self, after: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        self.tail_reads += 1
        return await self._inner.read_tails(after)


async def test_a_restarted_host_reactivates_a_call_s_users_in_one_read(stores: Stores) -> None:
    log = CountingLog(stores.log)
    first = make_host(stores, log=log, snapshot_every=4)  # type: ignore[arg-type]
    users = [f"r{k}" for k in range(20)]
    await first.ingest_many({u: views(u, 0, 6) for u in users})
    await first.passivate_all()  # snapshots at seq 6 for everyone
    await first.ingest_many({u: views(u, 6, 2) for u in users[:10]})  # tails past them
    log.tail_reads = 0
    second = make_host(stores, log=log)  # type: ignore[arg-type]  # a fresh process after a crash
    await second.ingest_many({u: views(u, 8, 1) for u in users})
    assert log.tail_reads == 1 and second.stats.activations == 20
    assert second.stats.replayed_events == 10 * 2  # only the tails past the snapshots
    for user in users:
        assert_same_profile(await second.state(user), await fresh_replay(stores, user))


@pytest.fixture
def host_warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.WARNING, logger="actors.profile_loader"):
        yield caplog


async def test_an_unreadable_snapshot_is_ignored_and_the_log_replayed(
    stores: Stores, host_warnings: pytest.LogCaptureFixture
) -> None:
    writer = make_host(stores, snapshot_every=1000)
    await writer.ingest("u", views("u", 0, 6))
    # Garbage where the newest snapshot under the user's config is looked for (a format this
    # release cannot read, or a damaged row).
    await stores.snapshots.save_many(
        [Snapshot("u", 4, b"\xc1 not a snapshot", CONFIG.config_hash())]
    )

    host = make_host(stores, snapshot_every=1000, snapshot_min_tail=1)
    assert_same_profile(await host.state("u"), await fresh_replay(stores, "u"))
    assert host.stats.snapshots_unreadable == 1 and host.stats.replayed_events == 6
    assert any("unreadable" in r.getMessage() for r in host_warnings.records)

    at = await host.state_at("u", until_seq=5)
    assert_same_profile(
        at, replay(await stores.log.read("u", until_seq=5), CONFIG, ITEMS, user_id="u")
    )
    assert host.stats.snapshots_unreadable == 2

    # Without a usable snapshot the user counts as never snapshotted: passivation writes a
    # good one, and the next activation starts from it.
    await host.passivate("u")
    again = make_host(stores)
    assert (await again.state("u")).event_count == 6
    assert again.stats.snapshots_unreadable == 0 and again.stats.replayed_events == 0


async def test_reads_keep_memory_within_the_budget(stores: Stores) -> None:
    """Reads used to keep every user they touched: a GET per random id grew the host
    without bound, and the budget was only enforced after writes."""
    writer = make_host(stores)
    for k in range(6):
        await writer.ingest(f"r{k}", views(f"r{k}", 0, 5))
    one_user = (await writer.state("r0")).event_count and writer.active_bytes / 6
    host = make_host(stores, memory_budget_bytes=int(one_user * 2.5))
    for k in range(200):  # unknown users: answered with an empty profile, never kept
        assert (await host.state(f"nobody-{k}")).event_count == 0
    assert host.active_users == 0
    for k in range(6):  # known users: activated by reads, evicted beyond the budget
        assert (await host.state(f"r{k}")).event_count == 5
    assert host.active_users <= 3 and host.stats.passivations >= 3
    assert host.active_bytes <= one_user * 2.5 + one_user


async def test_a_second_writer_is_a_counted_conflict_and_pending_events_show_the_queue(
    stores: Stores,
) -> None:
    """Conflicts and the group-commit queue were invisible to operators."""
    first, second = make_host(stores), make_host(stores, group_commit_window_s=0.2)
    await first.ingest("u", views("u", 0, 2))
    await second.ingest("u", views("u", 2, 2))  # second now holds "u" at seq 4
    await first.ingest("u", views("u", 4, 1))  # first's state is stale: conflict, re-read
    assert first.stats.conflicts == 1 and (await first.state("u")).event_count == 5
    assert second.pending_events == 0
    task = asyncio.create_task(second.ingest("v", views("v", 0, 3)))
    await asyncio.sleep(0.05)  # inside the 0.2 s commit window
    assert second.pending_events == 3
    await task
    assert second.pending_events == 0


async def test_a_user_larger_than_the_budget_is_not_kept_and_still_answers(
    stores: Stores,
) -> None:
    """The most recently used user used to stay whatever its size: one oversized profile
    held the host above its budget for good."""
    host = make_host(stores, memory_budget_bytes=1)
    await host.ingest("big", views("big", 0, 30))
    assert host.active_users == 0 and host.active_bytes == 0
    assert (await host.state("big")).event_count == 30  # reloaded from snapshot + log
    assert host.active_users == 0
    await host.ingest("big", views("big", 30, 5))
    assert (await host.state("big")).event_count == 35


async def test_a_lost_commit_acknowledgement_still_folds_and_is_not_a_duplicate(
    stores: Stores,
) -> None:
    """A commit that succeeded but whose acknowledgement was lost is retried by the store,
    which then finds the events recorded and calls them duplicates. They used to be left out
    of the live profile (and reported as duplicates of a send nobody had acknowledged)."""

    class LostAck:
        def __init__(self, log: EventLog) -> None:
            self._log = log
            self.lose_next = True

        def __getattr__(self, name: str) -> Any:
            return getattr(self._log, name)

        async def append_many(self, requests: Any) -> Any:
            got = await self._log.append_many(requests)
            if self.lose_next:  # what the store's retry of a committed transaction reports
                self.lose_next = False
                return [[dataclasses.replace(r, duplicate=True) for r in out]
                        if isinstance(out, list) else out for out in got]
            return got

    host = make_host(stores, log=LostAck(stores.log))
    results = await host.ingest("u", views("u", 0, 3))
    assert [(r.seq, r.duplicate) for r in results] == [(1, False), (2, False), (3, False)]
    assert (await host.state("u")).event_count == 3
    assert_same_profile(await host.state("u"), await fresh_replay(stores, "u"))
    again = await host.ingest("u", views("u", 0, 3) + views("u", 0, 1))  # a real resend
    assert all(r.duplicate for r in again) and (await host.state("u")).event_count == 3


async def test_an_event_that_cannot_be_folded_is_skipped_not_fatal(stores: Stores) -> None:
    """A deterministic fold failure (here: cached features of another width, as after an
    encoder change) made the user unloadable for good and failed every user activated in the
    same bulk read. Now that event is skipped, counted and logged; the user and the others
    load, and the user can still write."""
    import numpy as np

    from actors.text_features import text_digest
    from portrait.ports import TextFeatures, TextKey

    writer = make_host(stores, snapshot_every=1000)
    await writer.ingest("w", [SearchPerformed("w-s1", "w", T0, "space opera"),
                              SearchPerformed("w-s2", "w", T0 + 1, "noir detective")])
    await writer.ingest("ok", views("ok", 0, 3))
    cache = InMemoryTextFeatureStore()  # the new process's cache holds a bad row
    await cache.put_many(
        {TextKey("w", "w-s2", text_digest("noir detective")):
         TextFeatures(np.ones(7, np.float32))},
        ENCODER.model_id,
    )
    connector = ConnectedEncoder(ThreadedEncoder(ENCODER))
    host = make_host(stores, texts=TextFeatureSource(cache, connector))
    outcomes = await host.ingest_many({"w": views("w", 0, 1), "ok": views("ok", 3, 1)})
    assert [r.seq for r in outcomes["ok"]] == [4]  # type: ignore[union-attr]
    assert [r.seq for r in outcomes["w"]] == [3]  # type: ignore[union-attr]
    state = await host.state("w")
    assert state.last_seq == 3 and state.counts.get("search") == 1
    assert host.stats.events_unfoldable == 1


async def test_a_shard_call_past_its_deadline_is_unavailable_not_a_hang() -> None:
    """Ingress -> shard calls had no deadline: a stuck shard held every request for ever."""
    from actors.shard import ShardProxy
    from portrait.errors import ShardUnavailable

    class Method:
        def remote(self, *args: Any) -> Any:
            return asyncio.get_running_loop().create_future()  # never answered

    class StuckHandle:
        recommend = Method()

    proxy = ShardProxy(StuckHandle(), "portrait-shard-0", timeout_s=0.2)
    began = time.monotonic()
    with pytest.raises(ShardUnavailable) as caught:
        await proxy.recommend("u", 10, 0.0, [], [])
    assert time.monotonic() - began < 2 and "within 0.2 s" in str(caught.value)
