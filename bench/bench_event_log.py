"""Benchmark of the Postgres event log: append throughput and replay reads.

(a) append: N events through :meth:`PostgresEventLog.append` in batches (one user per batch),
    against raw asyncpg ``executemany`` of the same, pre-encoded rows into
    ``bench_events_raw`` (``LIKE events INCLUDING ALL``), one transaction per batch each.
(b) replay: read + decode of one user's H-event history, median and p99 over R runs, through
    :func:`read_history` (the hook to extend with a fold).
(c) encryption at rest: (a) and (b) with payloads in the clear and sealed per user, in the
    same run, alternating.

Runs on a throw-away embedded Postgres unless ``--url`` is given; on ``--url`` it migrates to
head, writes under a unique user prefix and deletes its rows afterwards.

    .venv/bin/python bench/bench_event_log.py [--url postgresql://...] [--events 50000]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from portrait.codec import decode_stored, encode  # noqa: E402
from portrait.config import ProfileConfig  # noqa: E402
from portrait.events import (  # noqa: E402
    Event,
    ItemRated,
    ItemViewed,
    RecordedEvent,
    SearchPerformed,
)
from portrait.fold import replay  # noqa: E402
from portrait.items import ItemIndex, l2_normalise  # noqa: E402
from portrait.ports import TextFeatures  # noqa: E402
from storage.database import create_engine  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.encryption import MasterKeys  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.postgres import PostgresEventLog  # noqa: E402
from storage.user_keys import UserKeys  # noqa: E402

RAW_INSERT = (
    "INSERT INTO bench_events_raw (user_id, seq, event_id, event_type, schema_version, "
    "occurred_at, payload) VALUES ($1, $2, $3, $4, $5, $6, $7)"
)


def make_events(user_id: str, n: int, start: float = 1.7e9) -> list[Event]:
    """``n`` plausible events of one user: views, ratings and searches."""
    out: list[Event] = []
    for i in range(n):
        common = {"event_id": f"{user_id}-{i}", "user_id": user_id, "occurred_at": start + i}
        if i % 10 == 9:
            out.append(SearchPerformed(**common, query=f"wireless headphones {i % 97}"))
        elif i % 5 == 4:
            out.append(ItemRated(**common, item_id=f"item-{i % 5000}", rating=float(i % 6)))
        else:
            out.append(ItemViewed(**common, item_id=f"item-{i % 5000}"))
    return out


async def read_history(log: PostgresEventLog, user_id: str) -> list[RecordedEvent]:
    """Everything a replay needs for ``user_id``."""
    return await log.read(user_id)


def bench_catalog(n_items: int = 5000, dim: int = 384) -> ItemIndex:
    """A catalog shaped like the real one: unit vectors of the MiniLM width, 1-3 tags each."""
    rng = np.random.default_rng(0)
    tags = [tuple(f"tag-{(i + j) % 40}" for j in range(1 + i % 3)) for i in range(n_items)]
    return ItemIndex([f"item-{i}" for i in range(n_items)],
                     l2_normalise(rng.normal(size=(n_items, dim))), tags)


def cached_text_features(events: Sequence[Event], dim: int = 384) -> dict[str, TextFeatures]:
    """What the text-feature cache returns for the history's searches (a cache hit)."""
    rng = np.random.default_rng(1)
    return {
        e.event_id: TextFeatures(l2_normalise(rng.normal(size=(1, dim)))[0],
                                 (("headphones", 0.6),), model_id="")
        for e in events if isinstance(e, SearchPerformed)
    }


def bench_fold_alone(items: ItemIndex, n: int, runs: int) -> float:
    """Events/s of the fold on item events only (views and ratings), one core."""
    config = ProfileConfig()
    events = [e for e in make_events("fold", n * 2) if not isinstance(e, SearchPerformed)][:n]
    recorded = [RecordedEvent(i + 1, i + 1, 0.0, e) for i, e in enumerate(events)]
    best = float("inf")
    for _ in range(runs):
        began = time.perf_counter()
        replay(recorded, config, items, user_id="fold")
        best = min(best, time.perf_counter() - began)
    return len(recorded) / best


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, ``q`` in [0, 100]."""
    ordered = sorted(samples)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


async def bench_append(url: str, log: PostgresEventLog, prefix: str, n: int, batch: int
                       ) -> tuple[float, float]:
    """Rows/s through the adapter and through raw asyncpg executemany."""
    batches = [make_events(f"{prefix}a{b}", batch) for b in range(max(1, n // batch))]
    rows = [
        [(e.user_id, seq, e.event_id, e.TYPE, e.SCHEMA_VERSION, float(e.occurred_at), encode(e))
         for seq, e in enumerate(events, start=1)]
        for events in batches
    ]
    total = sum(len(b) for b in batches)
    await log.append(f"{prefix}warm", make_events(f"{prefix}warm", batch))  # prepare statements

    began = time.perf_counter()
    for events in batches:
        await log.append(events[0].user_id, events, expected_version=0)
    adapter = total / (time.perf_counter() - began)

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("DROP TABLE IF EXISTS bench_events_raw")
        await conn.execute("CREATE TABLE bench_events_raw (LIKE events INCLUDING ALL)")
        async with conn.transaction():
            await conn.executemany(RAW_INSERT, [(f"{prefix}w", 1, f"{prefix}w", "view", 1, 1.0,
                                                 b"x")])
        began = time.perf_counter()
        for batch_rows in rows:
            async with conn.transaction():
                await conn.executemany(RAW_INSERT, batch_rows)
        raw = total / (time.perf_counter() - began)
        await conn.execute("DROP TABLE bench_events_raw")
    finally:
        await conn.close()
    return adapter, raw


async def bench_replay(log: PostgresEventLog, prefix: str, history: int, runs: int
                       ) -> tuple[list[float], list[float]]:
    """Milliseconds per read_history of one user, and per decode of the same payloads."""
    user = f"{prefix}reader"
    events = make_events(user, history)
    for start in range(0, history, 1000):
        await log.append(user, events[start : start + 1000])
    payloads = [encode(e) for e in events]
    await read_history(log, user)  # warm the pool and the statement cache
    items, texts, config = bench_catalog(), cached_text_features(events), ProfileConfig()
    reads, decodes, replays = [], [], []
    for _ in range(runs):
        began = time.perf_counter()
        recorded = await read_history(log, user)
        reads.append((time.perf_counter() - began) * 1e3)
        assert len(recorded) == history
        began = time.perf_counter()
        for payload in payloads:
            decode_stored(payload)
        decodes.append((time.perf_counter() - began) * 1e3)
        began = time.perf_counter()
        state = replay(await read_history(log, user), config, items, texts, user_id=user)
        replays.append((time.perf_counter() - began) * 1e3)
        assert state.event_count == history
    return reads, decodes, replays


async def bench_sealing(engine: AsyncEngine, prefix: str, n: int, batch: int, history: int,
                        runs: int, rounds: int = 5) -> dict[str, tuple[float, float]]:
    """Append rows/s and median replay-read ms, with payloads in the clear and sealed under
    per-user keys (encryption at rest), alternating the two in ``rounds`` so that both see
    the same machine; per mode, the median over rounds."""
    sealed_keys = UserKeys(MasterKeys([secrets.token_bytes(32)]))
    logs = {"plain": PostgresEventLog(engine), "sealed": PostgresEventLog(engine, keys=sealed_keys)}
    appends: dict[str, list[float]] = {mode: [] for mode in logs}
    reads: dict[str, list[float]] = {mode: [] for mode in logs}
    for r in range(rounds):
        for mode, log in logs.items():
            tag = f"{prefix}{mode}{r}-"
            batches = [make_events(f"{tag}a{b}", batch) for b in range(max(1, n // batch))]
            await log.append(f"{tag}warm", make_events(f"{tag}warm", batch))
            began = time.perf_counter()
            for events in batches:
                await log.append(events[0].user_id, events, expected_version=0)
            appends[mode].append(sum(map(len, batches)) / (time.perf_counter() - began))
            user = f"{tag}reader"
            events = make_events(user, history)
            for start in range(0, history, 1000):
                await log.append(user, events[start : start + 1000])
            await read_history(log, user)
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                assert len(await read_history(log, user)) == history
                samples.append((time.perf_counter() - began) * 1e3)
            reads[mode].append(statistics.median(samples))
    return {mode: (statistics.median(appends[mode]), statistics.median(reads[mode]))
            for mode in logs}


async def run(url: str, args: argparse.Namespace) -> None:
    engine = create_engine(url)
    log = PostgresEventLog(engine)
    prefix = f"bench-{uuid.uuid4().hex[:8]}-"
    try:
        adapter, raw = await bench_append(url, log, prefix, args.events, args.batch)
        reads, decodes, replays = await bench_replay(log, prefix, args.history, args.runs)
        fold_rate = bench_fold_alone(bench_catalog(), args.history, 5)
        sealing = await bench_sealing(engine, prefix, args.events // 2, args.batch,
                                      args.history, max(5, args.runs // 2))
    finally:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM events WHERE user_id LIKE $1", (prefix + "%",))
            await conn.exec_driver_sql("DELETE FROM user_keys WHERE user_id LIKE $1",
                                       (prefix + "%",))
        await engine.dispose()

    print(f"\nappend: {args.events:,} events, batches of {args.batch} (one user per batch)")
    print(f"  {'path':<34}{'rows/s':>12}")
    print(f"  {'PostgresEventLog.append':<34}{adapter:>12,.0f}")
    print(f"  {'raw asyncpg executemany':<34}{raw:>12,.0f}")
    print(f"  {'ratio (target >= 0.5)':<34}{adapter / raw:>12.2f}")
    print(f"\nreplay: one user's {args.history:,}-event history, {args.runs} runs")
    print(f"  {'step':<34}{'median ms':>12}{'p99 ms':>10}")
    print(f"  {'read_history (read + decode)':<34}{statistics.median(reads):>12.1f}"
          f"{percentile(reads, 99):>10.1f}")
    print(f"  {'  of which codec.decode_stored':<34}{statistics.median(decodes):>12.1f}"
          f"{percentile(decodes, 99):>10.1f}")
    print(f"  {'read + decode + fold (target <100)':<34}{statistics.median(replays):>12.1f}"
          f"{percentile(replays, 99):>10.1f}")
    print(f"\nfold alone, {args.history:,} item events, 384-d vectors: {fold_rate:,.0f} events/s"
          f" (target >= 200,000)")
    (plain_rate, plain_ms), (sealed_rate, sealed_ms) = sealing["plain"], sealing["sealed"]
    print(f"\nencryption at rest (per-user AES-256-GCM), {args.events // 2:,} appended events "
          f"and a {args.history:,}-event replay read per mode, alternating, median of 5 rounds")
    print(f"  {'mode':<34}{'append rows/s':>14}{'replay ms':>11}")
    print(f"  {'plaintext payloads':<34}{plain_rate:>14,.0f}{plain_ms:>11.1f}")
    print(f"  {'sealed payloads':<34}{sealed_rate:>14,.0f}{sealed_ms:>11.1f}")
    print(f"  {'sealed cost (target <= +15%)':<34}{plain_rate / sealed_rate - 1:>+14.1%}"
          f"{sealed_ms / plain_ms - 1:>+11.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="Postgres URL; default: a throw-away embedded server")
    parser.add_argument("--events", type=int, default=50_000, help="events to append")
    parser.add_argument("--batch", type=int, default=500, help="events per append")
    parser.add_argument("--history", type=int, default=10_000, help="events in the replay")
    parser.add_argument("--runs", type=int, default=20, help="replay repetitions")
    args = parser.parse_args()

    if args.url:
        upgrade(args.url)
        asyncio.run(run(args.url, args))
        return
    base = Path(tempfile.mkdtemp(prefix="portrait-bench-pg-"))
    server = EmbeddedPostgres(base / "data")
    try:
        url = server.start()
        print(f"embedded Postgres started in {server.start_seconds:.2f} s (initdb included)")
        upgrade(url)
        asyncio.run(run(url, args))
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
