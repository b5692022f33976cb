"""A large synthetic load through the running service: ingest rate, database size, shard
memory, cold activation and recommendation latency with every user in the log.

Starts the whole service (Ray, Serve, the vLLM encoder, shards; embedded Postgres under
--data-dir unless PORTRAIT_DATABASE_URL is set), loads a synthetic catalog, then sender
processes post users' streams (:mod:`portrait.synthetic`: Zipf item popularity, bursty
sessions, a share of text events; generated into --data-dir/load first, once per shape, so
the clock measures the service and not the generator) to ``POST /v1/events`` in batches,
each user's events in order, retrying 503/429 with the same event ids. It prints progress every
--every-s, and at the end (or at --max-minutes, whichever comes first):

* ingest: events/s durable over the whole load and per interval;
* Postgres: database and table sizes, bytes per event and per million events;
* shards: active users, their estimated bytes and the shard processes' RSS against the
  memory budget (passivation keeps it there);
* activation of a cold user with 1,000 events (loaded first, so it sits under everything
  else), from its snapshot and from the log alone, p50/p99;
* recommendations for random (cold, then warm) users, p50/p99, against a trivial Serve
  route measured in the same run.

    ./dev bench scale --users 1000000 --events 10000000 [--text-share 0.01]

Traffic goes to 127.0.0.1 only, and stops by itself at --max-minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_http import (  # noqa: E402
    deploy_trivial,
    drop_snapshots,
    pct,
    shard_rss,
    timed_gets,
)

HEAVY_USERS = 20  # users with exactly 1,000 events, for the cold-activation figure
HEAVY_EVENTS = 1_000


def shape_of(args: argparse.Namespace) -> Any:
    from portrait.synthetic import TrafficShape

    return TrafficShape(users=args.users, events=args.events, items=args.items,
                        text_share=args.text_share, seed=args.seed)


async def post(client: httpx.AsyncClient, body: bytes, deadline: float) -> int:
    """Send one batch until it is answered; retried 503/429 keep their event ids, so a
    batch the service did commit before failing is answered as duplicates. Returns the
    events the service refused (422 per event), which are counted, not retried."""
    delay = 0.05
    while True:
        try:
            resp = await client.post("/v1/events", content=body)
        except httpx.TransportError:
            resp = None
        if resp is not None and resp.status_code in (200, 207):
            return sum(1 for r in resp.json()["results"] if "error" in r)
        if resp is not None and resp.status_code not in (429, 503):
            raise RuntimeError(f"ingest answered {resp.status_code}: {resp.text[:300]}")
        if time.monotonic() > deadline:
            raise TimeoutError("the load's deadline passed while a batch was being retried")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def lane_file(folder: Path, lane: int) -> Path:
    return folder / f"lane-{lane:03d}.jsonl"


def generate(k: int, senders: int, args: argparse.Namespace, folder: Path) -> None:
    """Generator process ``k``: the request bodies of lanes ``k, k + senders, ...``, one per
    line (``events<TAB>json``), each lane's users in order. Written before the clock starts,
    so the ingest rate is the service's, not the generator's."""
    import json

    from portrait import codec
    from portrait.synthetic import TrafficGenerator

    gen = TrafficGenerator(shape_of(args))
    lanes = senders * args.conc
    for lane in range(k, lanes, senders):
        part = lane_file(folder, lane).with_suffix(".part")
        with part.open("w") as out:
            batch: list[dict[str, Any]] = []
            for index in range(lane, args.users, lanes):
                for e in gen.stream(index):
                    batch.append(codec.to_dict(e))
                    if len(batch) >= args.batch:
                        out.write(f"{len(batch)}\t{json.dumps({'events': batch})}\n")
                        batch = []
            if batch:
                out.write(f"{len(batch)}\t{json.dumps({'events': batch})}\n")
        part.rename(lane_file(folder, lane))


def sender(k: int, senders: int, args: argparse.Namespace, folder: Path, url: str,
           headers: dict[str, str], acked: Any, refused: Any, deadline: float) -> None:
    """Sender process ``k``: lanes ``k, k + senders, ...``, one connection each, each lane's
    batches in order (so one user's events are never reordered)."""
    lanes = senders * args.conc

    async def lane(client: httpx.AsyncClient, j: int) -> None:
        with lane_file(folder, j).open() as lines:
            for line in lines:
                if time.monotonic() > deadline:
                    return
                count, body = line.split("\t", 1)
                bad = await post(client, body.encode(), deadline)
                with acked.get_lock():
                    acked.value += int(count) - bad
                with refused.get_lock():
                    refused.value += bad

    async def run() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=300,
                                     headers={**headers, "content-type": "application/json"},
                                     limits=httpx.Limits(max_connections=args.conc)) as client:
            await asyncio.gather(*(lane(client, j) for j in range(k, lanes, senders)))

    asyncio.run(run())


def prepared_load(args: argparse.Namespace) -> Path:
    """The load's request bodies under --data-dir, generated once per shape."""
    shape = shape_of(args)
    folder = args.data_dir / "load" / (
        f"u{shape.users}-e{shape.events}-i{shape.items}-t{shape.text_share}-s{shape.seed}"
        f"-b{args.batch}-l{args.senders * args.conc}")
    lanes = args.senders * args.conc
    if all(lane_file(folder, j).exists() for j in range(lanes)):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=generate, args=(k, args.senders, args, folder))
             for k in range(args.senders)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    print(f"generated the load in {time.perf_counter() - began:.0f} s ({folder})", flush=True)
    return folder


def heavy_users(client: httpx.Client) -> list[str]:
    """``HEAVY_USERS`` users of exactly ``HEAVY_EVENTS`` synthetic events, loaded first."""
    from portrait import codec
    from portrait.synthetic import TrafficGenerator, TrafficShape

    gen = TrafficGenerator(TrafficShape(users=HEAVY_USERS, events=HEAVY_USERS * HEAVY_EVENTS,
                                        activity_sigma=0.0, text_share=0.0, seed=99))
    users = []
    for index in range(HEAVY_USERS):
        user = f"heavy-{index}"
        events = [{**codec.to_dict(e), "user_id": user} for e in gen.stream(index)]
        assert len(events) == HEAVY_EVENTS, len(events)
        for start in range(0, HEAVY_EVENTS, 500):
            resp = client.post("/v1/events", json={"events": events[start:start + 500]})
            assert resp.status_code == 200, resp.text
        users.append(user)
    return users


async def database_sizes(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from storage.database import create_engine

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            total = (await conn.execute(text("SELECT pg_database_size(current_database())"))
                     ).scalar_one()
            rows = (await conn.execute(text(
                "SELECT relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
                "ORDER BY 2 DESC LIMIT 6"))).all()
        return {"database": int(total), **{str(r[0]): int(r[1]) for r in rows}}
    finally:
        await engine.dispose()


def timed(client: httpx.Client, path: str, **params: Any) -> float:
    began = time.perf_counter()
    resp = client.get(path, params=params)
    assert resp.status_code == 200, resp.text
    return (time.perf_counter() - began) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--text-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--senders", type=int, default=2, help="sender processes")
    parser.add_argument("--conc", type=int, default=4, help="connections per sender")
    parser.add_argument("--batch", type=int, default=500, help="events per request")
    parser.add_argument("--every-s", type=float, default=60.0)
    parser.add_argument("--max-minutes", type=float, default=40.0)
    parser.add_argument("--data-dir", type=Path, default=Path(".portrait-scale"))
    args = parser.parse_args()

    import ray

    from actors.shard import existing_shards
    from portrait import catalog
    from portrait.synthetic import catalog as synthetic_catalog
    from serve.cli.database import database
    from serve.service import start_service
    from serve.settings import Settings

    settings = Settings(data_dir=args.data_dir, port=8013, shards=args.shards,
                        max_batch_events=max(1000, args.batch), retrain_every_events=10**12)
    shape = shape_of(args)
    folder = prepared_load(args)
    with database(settings) as db_url:
        svc = start_service(settings, db_url, load_demo_catalog=False)
        try:
            deploy_trivial()
            headers = svc.headers()
            with httpx.Client(base_url=svc.url, timeout=600, headers=headers) as c:
                began = time.perf_counter()
                items = [catalog.to_dict(i) for i in synthetic_catalog(shape)]
                for start in range(0, len(items), 1000):
                    resp = c.post("/v1/items", json={"items": items[start:start + 1000]})
                    assert resp.status_code == 200, resp.text
                print(f"catalog: {len(items):,} items in {time.perf_counter() - began:.0f} s",
                      flush=True)
                heavy = heavy_users(c)

            shards = existing_shards(args.shards)
            ctx = mp.get_context("spawn")
            acked, refused = ctx.Value("q", 0), ctx.Value("q", 0)
            deadline = time.monotonic() + args.max_minutes * 60
            procs = [ctx.Process(target=sender, args=(k, args.senders, args, folder, svc.url,
                                                      headers, acked, refused, deadline),
                                 daemon=True)
                     for k in range(args.senders)]
            began = time.perf_counter()
            for p in procs:
                p.start()
            peak_rss, peak_active, last_n, last_t = 0, 0, 0, began
            print(f"{'min':>6}{'events':>13}{'events/s':>10}{'interval/s':>11}"
                  f"{'active users':>14}{'shard RSS MB':>14}{'db MB':>9}", flush=True)
            while any(p.is_alive() for p in procs):
                for p in procs:
                    p.join(timeout=max(0.1, args.every_s / len(procs)))
                now, n = time.perf_counter(), acked.value
                stats = ray.get([s.stats.remote() for s in shards])
                rss = shard_rss(shards)
                active = sum(s["active_users"] for s in stats)
                peak_rss, peak_active = max(peak_rss, rss), max(peak_active, active)
                size = asyncio.run(database_sizes(db_url))["database"]
                print(f"{(now - began) / 60:>6.1f}{n:>13,}{n / (now - began):>10,.0f}"
                      f"{(n - last_n) / (now - last_t):>11,.0f}{active:>14,}"
                      f"{rss / 2**20:>14,.0f}{size / 2**20:>9,.0f}", flush=True)
                last_n, last_t = n, now
            load_s = time.perf_counter() - began
            failed = [p.exitcode for p in procs if p.exitcode != 0]
            loaded = acked.value

            sizes = asyncio.run(database_sizes(db_url))
            rng = random.Random(args.seed)
            sample = [f"u{rng.randrange(args.users):08d}" for _ in range(300)]
            with httpx.Client(base_url=svc.url, timeout=120, headers=headers) as c:
                trivial = timed_gets(c, "/trivial", 300)
                ray.get([s.passivate_all.remote() for s in shards])
                cold = [timed(c, f"/v1/users/{u}/recommendations", k=10) for u in sample]
                warm = [timed(c, f"/v1/users/{u}/recommendations", k=10) for u in sample]
                ray.get([s.passivate_all.remote() for s in shards])
                snap = [timed(c, f"/v1/users/{u}/profile", top=5) for u in heavy]
                ray.get([s.passivate_all.remote() for s in shards])
                asyncio.run(drop_snapshots(db_url, heavy))
                log_only = [timed(c, f"/v1/users/{u}/profile", top=5) for u in heavy]
        finally:
            svc.stop()

    budget = settings.users.memory_budget_mb * args.shards
    t50 = statistics.median(trivial)
    print(f"\nsynthetic load: {shape.users:,} users, {shape.events:,} events planned, "
          f"{shape.items:,} items, text share {shape.text_share:.1%}, {args.shards} shards, "
          f"{args.senders} senders x {args.conc} connections x {args.batch} events")
    print(f"  ingested {loaded:,} events durable ({refused.value:,} refused) in {load_s:,.0f} s: "
          f"{loaded / load_s:,.0f} events/s{'; SENDERS FAILED ' + str(failed) if failed else ''}"
          f"{'; stopped at --max-minutes' if loaded + refused.value < shape.events else ''}")
    per_m = 1e6 / max(loaded + HEAVY_USERS * HEAVY_EVENTS, 1)
    print(f"  Postgres {sizes['database'] / 2**20:,.0f} MB = "
          f"{sizes['database'] * per_m / 2**20:,.0f} MB per million events; largest tables: "
          + ", ".join(f"{k} {v / 2**20:,.0f} MB" for k, v in sizes.items() if k != "database"))
    print(f"  shards: peak {peak_active:,} active users, peak RSS {peak_rss / 2**20:,.0f} MB "
          f"(memory budget {budget} MB of profiles over {args.shards} shards)")
    print(f"  {'':<40}{'p50 ms':>9}{'p99 ms':>9}")
    for label, samples in (("trivial Serve route", trivial),
                           ("recommendations, cold random users", cold),
                           ("recommendations, same users warm", warm),
                           ("activation 1,000 events, snapshot", snap),
                           ("activation 1,000 events, log only", log_only)):
        ratio = f"{statistics.median(samples) / t50:.2f}x trivial p50"
        print(f"  {label:<40}{statistics.median(samples):>9.2f}{pct(samples, 99):>9.2f}  {ratio}")


if __name__ == "__main__":
    main()
