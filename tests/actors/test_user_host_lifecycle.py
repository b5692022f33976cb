"""The user host without Ray, a user's life in memory: activation from snapshot plus tail,
snapshots, passivation and the memory budget, time travel, variants, and data it cannot read.

Every test that takes ``stores`` runs on the in-memory adapters and on the embedded Postgres.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from actors.dependencies import ConnectedEncoder
from actors.text_features import TextFeatureSource, ThreadedEncoder
from portrait.config import ProfileConfig
from portrait.events import Event, ItemPurchased, ItemRated, RecordedEvent, SearchPerformed
from portrait.fold import replay
from portrait.ports import EventLog, Snapshot
from portrait.variants import VariantPolicy
from storage.text_features import InMemoryTextFeatureStore
from tests.actors.conftest import (
    CONFIG,
    ENCODER,
    ITEMS,
    T0,
    Clock,
    Stores,
    fresh_replay,
    make_host,
    settle,
    views,
)
from tests.unit.builders import assert_same_profile


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
         TextFeatures(np.ones(7, np.float32), model_id=ENCODER.model_id)},
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
