"""Benchmark of a shard resize under load: the hand-off pause a moved user sees.

The in-process system (the real routes, shards and hand-off protocol, without Ray's hops) on
a throw-away embedded Postgres. W writers stream single-event writes and reads over U users;
after a warm-up the shard count goes 2 -> 4, then 4 -> 2. Per request: its latency, whether
its user moved in the resize it overlapped, and its status. Printed: latency p50/p99 of
requests that did not overlap a resize (the baseline), of requests of moved users that did
(the hand-off pause), their ratio, and how many requests failed (503s are retried by the
writer, like a client).

    .venv/bin/python bench/bench_resize.py [--users 400] [--writers 8] [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.text_features import ThreadedEncoder  # noqa: E402
from portrait.routing import Topology, shard_names  # noqa: E402
from serve.composition import in_process  # noqa: E402
from serve.settings import Settings  # noqa: E402
from serve.token_admin import create_token  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from storage.encryption import MASTER_KEY_ENV, new_master_key_text  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from tests.fakes import HashingEncoder  # noqa: E402

KEY = os.urandom(32)
T0 = 1_700_000_000.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else 0.0


async def run_in_process(url: str, args: argparse.Namespace) -> None:
    system = in_process(Settings(shards=2, snapshot_every=20, catalog_refresh_s=1.0), url,
                        ThreadedEncoder(HashingEncoder(dim=32)), secret_key=KEY)
    token = await create_token(system.context.stores.tokens, KEY, "bench", ["admin"])
    transport = httpx.ASGITransport(app=system.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers={"authorization": f"Bearer {token.text}"}) as http:
            await run(http, args)
    finally:
        await system.close()


def run_on_ray(url: str, base: Path, args: argparse.Namespace) -> None:
    """The Ray system (ingress, shard actors, directory, vLLM encoder) over HTTP on loopback."""
    from serve.service import start_service

    settings = Settings(data_dir=base, port=8796, shards=2, snapshot_every=20,
                        catalog_refresh_s=1.0)
    svc = start_service(settings, url, load_demo_catalog=False)
    try:
        async def go() -> None:
            async with httpx.AsyncClient(base_url=svc.url, headers=svc.headers(),
                                         timeout=60) as http:
                await run(http, args)
        asyncio.run(go())
    finally:
        svc.stop()


async def run(http: httpx.AsyncClient, args: argparse.Namespace) -> None:
    users = [f"user-{i}" for i in range(args.users)]
    windows: list[tuple[float, float, Topology, Topology]] = []
    samples: list[tuple[float, float, str, int]] = []  # start, end, user, status
    stop = asyncio.Event()
    counts = [2]
    items = [{"id": f"m{i}", "title": f"Film {i}", "description": f"film {i}",
              "tags": ["Drama"]} for i in range(50)]
    assert (await http.post("/v1/items", json={"items": items})).status_code == 200

    async def writer(k: int) -> None:
        i = 0
        while not stop.is_set():
            user = users[(k + i * args.writers) % len(users)]
            event = {"type": "view", "event_id": f"{user}-{k}-{i}", "user_id": user,
                     "occurred_at": T0 + i, "item_id": f"m{i % 50}"}
            began = time.perf_counter()
            while True:
                resp = await http.post("/v1/events", json={"events": [event]})
                samples.append((began, time.perf_counter(), user, resp.status_code))
                if resp.status_code != 503:
                    break
                await asyncio.sleep(0.02)
            began = time.perf_counter()
            resp = await http.get(f"/v1/users/{user}/recommendations")
            samples.append((began, time.perf_counter(), user, resp.status_code))
            i += 1

    async def resize(count: int) -> None:
        # Placement depends on the shard names only (rendezvous hashing), not the epoch.
        before = Topology(1, shard_names(counts[-1]))
        began = time.perf_counter()
        resp = await http.post("/v1/shards", json={"count": count})
        assert resp.status_code == 200, resp.text
        windows.append((began, time.perf_counter(), before,
                        Topology(1, shard_names(count))))
        counts.append(count)

    tasks = [asyncio.create_task(writer(k)) for k in range(args.writers)]
    await asyncio.sleep(args.seconds / 3)
    await resize(4)
    await asyncio.sleep(args.seconds / 3)
    await resize(2)
    await asyncio.sleep(args.seconds / 3)
    stop.set()
    await asyncio.gather(*tasks)

    baseline, moved, failed = [], [], 0
    for began, ended, user, status in samples:
        if status not in (200, 503):
            failed += 1
        overlap = [(b, e, t0, t1) for b, e, t0, t1 in windows if began < e and ended > b]
        if not overlap:
            baseline.append(ended - began)
        elif any(t0.owner(user) != t1.owner(user) for _, _, t0, t1 in overlap):
            moved.append(ended - began)
    share = Topology(1, shard_names(2)).moved_share(Topology(2, shard_names(4)), users)
    print(f"\n{len(samples):,} requests, {args.writers} writers, {args.users} users; "
          f"{share:.0%} of users moved on 2 -> 4; resizes took "
          + ", ".join(f"{(e - b) * 1e3:.0f} ms" for b, e, _, _ in windows))
    print(f"  {'requests':<44}{'n':>7}{'p50 ms':>9}{'p99 ms':>9}")
    print(f"  {'outside a resize (baseline)':<44}{len(baseline):>7}"
          f"{statistics.median(baseline) * 1e3:>9.1f}{pct(baseline, 99) * 1e3:>9.1f}")
    if moved:
        print(f"  {'of moved users, overlapping a resize':<44}{len(moved):>7}"
              f"{statistics.median(moved) * 1e3:>9.1f}{pct(moved, 99) * 1e3:>9.1f}")
        print(f"  hand-off pause p99 (target <= 200 ms): {pct(moved, 99) * 1e3:.0f} ms; "
              f"ratio to baseline p99 {pct(moved, 99) / pct(baseline, 99):.2f}")
    print(f"  failed (not 200, not a retried 503): {failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=400)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--ray", action="store_true",
                        help="the Ray system over HTTP instead of the in-process one")
    args = parser.parse_args()
    os.environ.setdefault(MASTER_KEY_ENV, new_master_key_text())
    base = Path(tempfile.mkdtemp(prefix="portrait-bench-resize-"))
    try:
        with EmbeddedPostgres(base / "pg") as pg:
            upgrade(pg.url)
            if args.ray:
                run_on_ray(pg.url, base, args)
            else:
                asyncio.run(run_in_process(pg.url, args))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
