"""Soak: mixed traffic against the whole service for a fixed time, RSS of every process sampled.

Starts the service (embedded Postgres under --data-dir, Ray, Serve, the vLLM encoder) with a
small per-shard memory budget so that eviction works all the time, posts the first
--items MovieLens movies, then runs --concurrency clients on loopback until --minutes have
passed (the loop stops by itself): batched ingest for a pool of known users (views, ratings,
and now and then a search), their recommendations and profiles, and reads of random unknown
user ids. Every --sample-s it records the RSS of each Ray worker process (by kind: shard,
ingress, encoder, controller, proxy, raylet/GCS) and the shards' active-user bytes.

Reports, per kind and in total, the RSS growth from the end of the warm-up (the first
--warmup share of the run) to the mean of the last tenth; target < 5%. And whether every
shard's active-user bytes stayed within its budget (reads included). Exit status 1 when a
target is missed.

    ./dev bench soak [--minutes 30] [--data-dir /tmp/soak]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T0 = 1_700_000_000
KINDS = (("ProfileShard", "shard"), ("PortraitIngress", "ingress"), ("Encoder", "encoder"),
         ("ServeController", "controller"), ("ProxyActor", "proxy"), ("raylet", "raylet"),
         ("gcs_server", "gcs"))


def kind_of(cmdline: str) -> str | None:
    for needle, kind in KINDS:
        if needle in cmdline:
            return kind
    return None


def sample_rss() -> dict[str, int]:
    import psutil

    out: dict[str, int] = defaultdict(int)
    # Only this run's cluster: ray.init started GCS and raylet as our children, and the
    # workers are the raylet's. (Another Ray on the machine must not count.)
    for proc in psutil.Process().children(recursive=True):
        try:
            kind = kind_of(" ".join(proc.cmdline()))
            if kind is not None:
                out[kind] += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return dict(out)


async def traffic(url: str, items: list[str], deadline: float, users: int, seed: int,
                  statuses: Counter[str], headers: dict[str, str]) -> None:
    rng = random.Random(seed)
    sent: dict[str, int] = defaultdict(int)
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:
        while time.monotonic() < deadline:
            roll = rng.random()
            user = f"soak-{seed}-{rng.randrange(users)}"
            if roll < 0.35:
                events = []
                for _ in range(20):
                    k = sent[user]
                    sent[user] += 1
                    event: dict[str, Any] = {
                        "event_id": f"{user}-{k}", "user_id": user, "occurred_at": T0 + k * 60,
                    }
                    if k % 25 == 24:
                        event.update(type="search", query=f"films about {rng.choice(items)}")
                    elif k % 3:
                        event.update(type="view", item_id=rng.choice(items))
                    else:
                        event.update(type="rating", item_id=rng.choice(items),
                                     rating=rng.choice([2.0, 3.5, 4.0, 5.0]))
                    events.append(event)
                resp = await http.post("/v1/events", json={"events": events})
                kind = "ingest"
            elif roll < 0.65:
                resp = await http.get(f"/v1/users/{user}/recommendations", params={"k": 10})
                kind = "recommend"
            elif roll < 0.8:
                resp = await http.get(f"/v1/users/{user}/profile")
                kind = "profile"
            else:  # an id nobody ever wrote for: must not cost memory
                stranger = f"stranger-{rng.getrandbits(64):x}"
                resp = await http.get(f"/v1/users/{stranger}/recommendations")
                kind = "unknown"
            statuses[f"{kind} {resp.status_code}"] += 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/portrait-soak"))
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--users", type=int, default=3000, help="known users per client")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--sample-s", type=float, default=15.0)
    parser.add_argument("--warmup", type=float, default=0.25, help="share of the run")
    parser.add_argument("--budget-mb", type=int, default=4, help="per-shard memory budget")
    args = parser.parse_args()

    import ray

    from actors.catalog_registry import NAMESPACE
    from serve.cli.database import database
    from serve.service import start_service
    from serve.settings import Settings
    from storage.datasets.movielens import load_movielens

    settings = Settings(data_dir=args.data_dir, port=8012, memory_budget_mb=args.budget_mb,
                        max_batch_events=1000)
    with database(settings) as db_url:
        svc = start_service(settings, db_url, load_demo_catalog=False)
        try:
            movies = load_movielens().items[: args.items]
            body = {"items": [{"id": m.item_id, "title": m.title, "description": m.description,
                               "tags": list(m.tags)} for m in movies]}
            assert httpx.post(f"{svc.url}/v1/items", json=body, timeout=600,
                              headers=svc.headers()).status_code == 200
            items = [m.item_id for m in movies]
            shards = [ray.get_actor(f"portrait-shard-{i}", namespace=NAMESPACE)
                      for i in range(settings.shards.count)]
            statuses: Counter[str] = Counter()
            samples: list[tuple[float, dict[str, int], int]] = []
            began = time.monotonic()
            deadline = began + args.minutes * 60

            async def run() -> None:
                clients = asyncio.gather(*(
                    traffic(svc.url, items, deadline, args.users, seed, statuses, svc.headers())
                    for seed in range(args.concurrency)
                ))
                while not clients.done():
                    stats = await asyncio.to_thread(
                        lambda: ray.get([s.stats.remote() for s in shards]))
                    over = max(s["active_bytes"] for s in stats)
                    samples.append((time.monotonic() - began, sample_rss(), over))
                    await asyncio.wait([clients], timeout=args.sample_s)
                await clients

            asyncio.run(run())
        finally:
            svc.stop()

    warm_end = args.minutes * 60 * args.warmup
    warm = [s for s in samples if s[0] >= warm_end]
    if len(warm) < 4:
        print("too few samples after the warm-up; run longer")
        return 1
    tail = warm[-max(1, len(warm) // 10):]
    print(f"\nsoak: {args.minutes:g} min, {sum(statuses.values()):,} requests, "
          f"{len(samples)} RSS samples every {args.sample_s:g} s")
    print("  requests: " + ", ".join(f"{k} x{v:,}" for k, v in sorted(statuses.items())))
    ok = True
    kinds = sorted({k for _, rss, _ in samples for k in rss})
    print(f"  {'process kind':<12}{'after warm-up':>15}{'end (mean)':>13}{'growth':>9}")
    for kind in [*kinds, "total"]:
        def value(rss: dict[str, int], kind: str = kind) -> float:
            return float(sum(rss.values()) if kind == "total" else rss.get(kind, 0))

        start = value(warm[0][1])
        end = statistics.mean(value(s[1]) for s in tail)
        growth = (end - start) / start if start else 0.0
        ok &= growth < 0.05
        print(f"  {kind:<12}{start / 2**20:>12.0f} MiB{end / 2**20:>10.0f} MiB{growth:>+8.1%}")
    # The budget is enforced after each call, so a sample may catch one batch above it.
    budget = args.budget_mb * 2**20
    worst = max(s[2] for s in samples)
    within = worst <= budget * 1.05
    ok &= within
    errors = sum(v for k, v in statuses.items() if k.split()[1].startswith("5"))
    ok &= errors == 0
    print(f"  largest shard active-user bytes: {worst / 2**20:.2f} MiB of a {args.budget_mb} MiB "
          f"budget ({'within' if within else 'OVER'} it, 5% slack for a batch in flight); "
          f"5xx answers: {errors}")
    print("  targets (RSS growth < 5% after warm-up, budget held, no 5xx): "
          + ("met" if ok else "NOT met"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
