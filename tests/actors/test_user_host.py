"""The user host without Ray, writing: group commit, per-user order, idempotence,
conflicts, cancellation, the encoder's outages and the shard call's deadline.

Every test that takes ``stores`` runs on the in-memory adapters and on the embedded Postgres.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import pytest

from actors.text_features import TextFeatureSource, ThreadedEncoder
from portrait.errors import EncoderUnavailable, EventIdConflict
from portrait.events import Event, ItemViewed, SearchPerformed
from portrait.ports import EventLog
from tests.actors.conftest import ENCODER, T0, Stores, fresh_replay, make_host, views
from tests.unit.builders import assert_same_profile


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
