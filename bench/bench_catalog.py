"""Catalog scale: the whole service at several catalog sizes, each loaded through the API.

For each size, a fresh data dir (embedded Postgres, Ray, Serve, the vLLM encoder; loopback
only, the demo catalog not loaded), then over HTTP:

* a synthetic catalog (title + description + 3 tags, in topics) through ``POST /v1/items`` in
  batches of 500 from 2 concurrent clients: encoded by the service up to ``--encode-up-to``
  items, above it with precomputed ``vector_b64`` vectors (random, clustered by topic, unit).
  Import items/s over the whole load and over its last tenth; for an encoded load also the
  encoder's own texts/s on texts of the same generator (never imported, so no cache helps),
  measured in the same run through the encoder deployment (chunks of 256, 2 callers), and
  the ratio import / encoder;
* 300 users x 30 views (each user's views in one topic) via ``POST /v1/events``;
* an explicit retrain (``POST /v1/item-space/retrain``): its wall time and the trainer's;
* warm recommendations (k=10) of those users, p50 / p99 over ``--requests``;
* RSS and PSS (psutil ``memory_full_info``) of the ingress replica, the catalog registry, the
  publication actor, each profile shard and the encoder replica, and the raw vector bytes
  (items x width x 4).

Then one table with each size's figures and its ratio to the smallest size. A size that runs
past ``--max-minutes``, or leaves less than ``--min-free-gib`` of memory available, stops its
import there, says so, and is measured on what it loaded.

    ./dev bench catalog --items 10000,100000,1000000 [--encode-up-to 100000]
        [--max-minutes 60] [--min-free-gib 3] [--requests 600]
        [--data-dir .portrait/bench-catalog] [--keep]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

T0 = 1_700_000_000
BATCH = 500
CLIENTS = 2
USERS = 300
VIEWS = 30
TOPICS = 200
ENCODER_SAMPLE = 2_000
ENCODER_CHUNK = 256
# Ray process titles (ray::<class>...) -> the row the table shows.
ROLES = (("ProfileShard", "shards"), ("CatalogRegistry", "registry"),
         ("CatalogPublicationActor", "publication"), ("PortraitIngress", "ingress"),
         ("EncoderDeployment", "encoder"))

_WORDS = ("amber", "brisk", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo",
          "juniper", "kestrel", "lumen", "meadow", "nimbus", "onyx", "prairie", "quartz",
          "raven", "sierra", "tundra", "umber", "velvet", "willow", "xenon", "yarrow", "zephyr",
          "canvas", "leather", "cotton", "steel", "ceramic", "linen", "maple", "silk", "wool",
          "copper", "granite", "bamboo", "cobalt", "crimson")
_KINDS = ("jacket", "lamp", "kettle", "backpack", "novel", "headphones", "sneakers", "mug",
          "blanket", "watch", "tent", "guitar", "puzzle", "candle", "skillet", "scarf")


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def topic_of(k: int) -> int:
    return (k * 7919) % TOPICS


def synthetic_item(k: int) -> dict[str, Any]:
    """Item ``k``: words drawn from its topic's share of the vocabulary, so a topic's items
    read alike (and its users' views make a collaborative signal)."""
    topic = topic_of(k)
    rng = np.random.default_rng(k)
    own = [_WORDS[(topic * 3 + j) % len(_WORDS)] for j in range(6)]
    words = [own[i] if rng.random() < 0.7 else _WORDS[int(rng.integers(len(_WORDS)))]
             for i in rng.integers(0, len(own), 18)]
    kind = _KINDS[topic % len(_KINDS)]
    return {
        "id": f"s{k:07d}",
        "title": f"{own[0].title()} {own[1]} {kind} no. {k}",
        "description": f"A {' '.join(words[:9])} {kind}, {' '.join(words[9:])}.",
        "tags": [f"topic-{topic}", kind, own[2]],
    }


class ClusteredVectors:
    """Unit vectors around one random centre per topic (item ``k``'s in :func:`topic_of`),
    made batch by batch (a million rows at once would be gigabytes in this process)."""

    def __init__(self, dim: int, seed: int = 0) -> None:
        self.centres = np.random.default_rng(seed).normal(size=(TOPICS, dim)).astype(np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        rng = np.random.default_rng(start)
        topics = np.array([topic_of(k) for k in range(start, stop)])
        noise = rng.standard_normal(size=(stop - start, self.centres.shape[1]),
                                    dtype=np.float32)
        out: np.ndarray = self.centres[topics] + 0.5 * noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype("<f4")


def item_text_of(item: dict[str, Any]) -> str:
    from portrait.catalog import from_dict, item_text

    return item_text(from_dict(item))


@dataclass
class SizeResult:
    """One catalog size's figures (None where the phase did not run)."""

    items: int
    loaded: int = 0
    mode: str = "encoded"
    import_s: float = 0.0
    import_rate: float = 0.0
    last_tenth_rate: float = 0.0
    encoder_rate: float | None = None
    stopped: str | None = None
    retrain_s: float | None = None
    retrain_inside_s: float | None = None
    settle_s: float | None = None  # retrain published, compacted, indexes built
    indexes: str = ""
    p50: float | None = None
    p99: float | None = None
    memory: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # rss, pss, count
    vector_bytes: int = 0


def probe_encoder(n: int, encode_up_to: int) -> tuple[int, str, float | None, int]:
    """The encoder deployment's width and model id, and, for a catalog it will encode, its
    own texts/s on texts of the same generator that are never imported (chunks of 256 from 2
    callers, as the import's catalog chunks reach it; one warm-up call first).

    The handle is this bench's own, its router on a loop of its own (the service runs
    Serve's throughput mode, whose handles are bound to the caller's event loop), and shut
    down here, so stopping Serve later does not trip over it."""
    from concurrent.futures import ThreadPoolExecutor

    from ray.serve.handle import DeploymentHandle

    from serve.composition import APP_NAME, ENCODER_DEPLOYMENT

    handle: Any = DeploymentHandle(ENCODER_DEPLOYMENT, APP_NAME)
    handle._init(_run_router_in_separate_loop=True)
    try:
        info = handle.info.remote().result()
        dim, model = int(info["dim"]), str(info["model_id"])
        if n > encode_up_to:
            return dim, model, None, 0
        prefix = str(info.get("passage_prefix", ""))
        texts = [prefix + item_text_of(synthetic_item(n + k))
                 for k in range(min(ENCODER_SAMPLE, n))]
        handle.encode.remote(texts[:16]).result()
        chunks = [texts[i:i + ENCODER_CHUNK] for i in range(0, len(texts), ENCODER_CHUNK)]
        began = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            list(pool.map(lambda chunk: handle.encode.remote(chunk).result(), chunks))
        return dim, model, len(texts) / (time.perf_counter() - began), len(texts)
    finally:
        handle.shutdown()


def batch_body(start: int, n: int, vectors: ClusteredVectors | None, model: str
               ) -> dict[str, Any]:
    """The ``POST /v1/items`` body of the batch from item ``start``: with ``vector_b64`` and
    ``vector_model`` when ``vectors`` is given."""
    stop = min(n, start + BATCH)
    rows = vectors.rows(start, stop) if vectors is not None else None
    items = []
    for k in range(start, stop):
        item = synthetic_item(k)
        if rows is not None:
            item["vector_b64"] = base64.b64encode(rows[k - start].tobytes()).decode("ascii")
            item["vector_model"] = model
        items.append(item)
    return {"items": items}


async def load_catalog(url: str, headers: dict[str, str], n: int,
                       vectors: ClusteredVectors | None, model: str, deadline: float,
                       min_free: float) -> tuple[int, list[float], str | None]:
    """POST the catalog in batches from 2 clients; (items loaded, each batch's finish time,
    why it stopped early or None: past the deadline, or under ``min_free`` bytes of
    available memory, before this machine runs out)."""
    import psutil

    starts = list(range(0, n, BATCH))
    starts.reverse()
    done_at: list[float] = []
    loaded = 0
    stopped: str | None = None

    async with httpx.AsyncClient(base_url=url, timeout=1800, headers=headers,
                                 limits=httpx.Limits(max_connections=CLIENTS)) as client:
        async def worker() -> None:
            nonlocal loaded, stopped
            while starts and stopped is None:
                if time.perf_counter() > deadline:
                    stopped = f"stopped after {loaded:,} items: past --max-minutes"
                    return
                free = psutil.virtual_memory().available
                if free < min_free:
                    stopped = (f"stopped after {loaded:,} items: {free / 2**30:.1f} GiB of "
                               "memory left (--min-free-gib)")
                    return
                start = starts.pop()
                resp = await client.post("/v1/items", json=batch_body(start, n, vectors, model))
                if resp.status_code != 200:
                    stopped = f"batch at {start} refused: {resp.status_code} {resp.text[:200]}"
                    return
                loaded += min(n, start + BATCH) - start
                done_at.append(time.perf_counter())
                if len(done_at) % 20 == 0:
                    print(f"    {loaded:,} / {n:,} items", flush=True)

        await asyncio.gather(*(worker() for _ in range(CLIENTS)))
    return loaded, done_at, stopped


def send_views(c: httpx.Client, n: int, run: str) -> list[str]:
    """300 users x 30 views, each user's in one topic (items of that topic in the catalog)."""
    by_topic: dict[int, list[int]] = {}
    for k in range(n):
        by_topic.setdefault(topic_of(k), []).append(k)
    users = [f"{run}-u{u}" for u in range(USERS)]
    events = []
    for u, user in enumerate(users):
        pool = by_topic[u % TOPICS] if n >= TOPICS else list(range(n))
        rng = np.random.default_rng(u)
        for j in range(VIEWS):
            k = pool[int(rng.integers(len(pool)))]
            events.append({"type": "view", "event_id": f"{user}-{j}", "user_id": user,
                           "occurred_at": T0 + u * 100 + j, "item_id": f"s{k:07d}"})
    for b in range(0, len(events), 1000):
        resp = c.post("/v1/events", json={"events": events[b:b + 1000]})
        assert resp.status_code == 200, resp.text
    return users


def settle(c: httpx.Client, loaded: int, deadline: float) -> tuple[float, str]:
    """Wait until the published view is the one recommendations are measured on: every item
    in its base (compaction done), the retrained item space in it (no rebuild pending) and,
    at a size ranked through approximate indexes, its indexes built. Returns the seconds
    waited and the indexes; gives up at ``deadline`` (and says so)."""
    began = time.perf_counter()
    view: dict[str, Any] = {}
    while time.perf_counter() < max(deadline, began + 60):
        view = c.get("/v1/item-space").json().get("catalog", {})
        ready = (view.get("rows", 0) >= loaded and view.get("rows_after_base", 1) == 0
                 and not view.get("rebuild_pending", True)
                 and (loaded < 50_000 or view.get("indexes")))
        if ready:
            break
        time.sleep(2.0)
    waited = time.perf_counter() - began
    indexes = ",".join(view.get("indexes", [])) or "none (exact)"
    print(f"  view settled in {waited:.0f}s: {view.get('rows', 0):,} rows, indexes {indexes}",
          flush=True)
    return waited, indexes


def timed_recs(c: httpx.Client, users: list[str], n: int) -> list[float]:
    for user in users:  # activation is not what is timed
        assert c.get(f"/v1/users/{user}/recommendations", params={"k": 10}).status_code == 200
    out = []
    for k in range(n):
        began = time.perf_counter()
        resp = c.get(f"/v1/users/{users[k % len(users)]}/recommendations", params={"k": 10})
        out.append((time.perf_counter() - began) * 1e3)
        assert resp.status_code == 200, resp.text
    return out


def ray_memory() -> dict[str, tuple[int, int, int]]:
    """role -> (RSS, PSS, processes) summed over this run's Ray processes of that role (the
    raylet started by this process is their parent)."""
    import psutil

    out: dict[str, tuple[int, int, int]] = {}
    for proc in psutil.Process(os.getpid()).children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if not title.startswith("ray::"):
            continue
        for marker, role in ROLES:
            if marker in title:
                try:
                    mem = proc.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    break
                rss, pss, count = out.get(role, (0, 0, 0))
                out[role] = (rss + mem.rss, pss + getattr(mem, "pss", 0), count + 1)
                break
    return out


def run_size(n: int, args: argparse.Namespace, base: Path) -> SizeResult:
    from serve.cli.database import database
    from serve.service import start_service
    from serve.settings import Settings

    result = SizeResult(n)
    data_dir = base / f"items-{n}"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    settings = Settings(data_dir=data_dir, port=args.port, max_batch_events=1000,
                        retrain_every_events=10**9)
    began = time.perf_counter()
    deadline = began + args.max_minutes * 60
    run = f"r{int(time.time())}"
    try:
        with database(settings) as db_url:
            svc = start_service(settings, db_url, load_demo_catalog=False)
            try:
                dim, model, result.encoder_rate, sampled = probe_encoder(
                    n, args.encode_up_to)
                vectors = None
                if result.encoder_rate is None:
                    result.mode = "vector_b64"
                    vectors = ClusteredVectors(dim)
                else:
                    print(f"  encoder alone: {result.encoder_rate:.0f} texts/s on "
                          f"{sampled:,} texts", flush=True)
                t0 = time.perf_counter()
                loaded, done_at, stopped = asyncio.run(load_catalog(
                    svc.url, svc.headers(), n, vectors, model, deadline,
                    args.min_free_gib * 2**30))
                result.loaded, result.stopped = loaded, stopped
                result.import_s = time.perf_counter() - t0
                result.import_rate = loaded / result.import_s if result.import_s else 0.0
                tenth = max(1, len(done_at) // 10)
                if len(done_at) > tenth:
                    span = done_at[-1] - done_at[-1 - tenth]
                    result.last_tenth_rate = tenth * BATCH / span if span > 0 else 0.0
                result.vector_bytes = loaded * dim * 4
                print(f"  import: {loaded:,} items in {result.import_s:.1f}s "
                      f"({result.import_rate:.0f}/s; last tenth {result.last_tenth_rate:.0f}/s)"
                      + (f" {stopped}" if stopped else ""), flush=True)
                if loaded == 0:
                    return result
                with httpx.Client(base_url=svc.url, timeout=1800, headers=svc.headers()) as c:
                    users = send_views(c, loaded, run)
                    t1 = time.perf_counter()
                    resp = c.post("/v1/item-space/retrain")
                    result.retrain_s = time.perf_counter() - t1
                    assert resp.status_code == 200, resp.text
                    result.retrain_inside_s = float(resp.json().get("last_seconds") or 0.0)
                    print(f"  retrain: {result.retrain_s:.1f}s", flush=True)
                    # the view's own time (compaction, indexes) is not the import's budget
                    result.settle_s, result.indexes = settle(
                        c, loaded, time.perf_counter() + args.settle_minutes * 60)
                    latencies = timed_recs(c, users, args.requests)
                    result.p50, result.p99 = statistics.median(latencies), pct(latencies, 99)
                    print(f"  recommendations: p50 {result.p50:.1f} ms, p99 {result.p99:.1f} ms",
                          flush=True)
                result.memory = ray_memory()
            finally:
                try:
                    svc.stop()
                except Exception as exc:  # the figures above still count
                    print(f"  stopping the service failed: {exc!r}", flush=True)
    finally:
        if not args.keep and data_dir.exists():
            shutil.rmtree(data_dir, ignore_errors=True)
    return result


def ratio(value: float | None, first: float | None) -> str:
    if value is None or not first:
        return ""
    return f" ({value / first:.2f}x)"


def report(results: list[SizeResult]) -> None:
    first = results[0]
    mib = 1024 * 1024

    def row(label: str, cells: list[str]) -> None:
        print(f"  {label:<34}" + "".join(f"{c:>24}" for c in cells))

    print("\ncatalog scale (HTTP on 127.0.0.1; ratios to the smallest size)")
    row("catalog", [f"{r.items:,} items" for r in results])
    row("loaded (how)", [f"{r.loaded:,} ({r.mode})" for r in results])
    row("import items/s", [f"{r.import_rate:,.0f}{ratio(r.import_rate, first.import_rate)}"
                           for r in results])
    row("  over the last tenth", [f"{r.last_tenth_rate:,.0f}" for r in results])
    row("encoder alone texts/s", ["" if r.encoder_rate is None else f"{r.encoder_rate:,.0f}"
                                  for r in results])
    row("import / encoder", ["" if r.encoder_rate is None
                             else f"{r.import_rate / r.encoder_rate:.2f}" for r in results])
    row("view settled after s (indexes)", [
        "" if r.settle_s is None else f"{r.settle_s:.0f} ({r.indexes})" for r in results])
    row("explicit retrain s (trainer)", [
        "" if r.retrain_s is None
        else f"{r.retrain_s:.1f}{ratio(r.retrain_s, first.retrain_s)} ({r.retrain_inside_s:.1f})"
        for r in results])
    row("recommendations p50 ms", ["" if r.p50 is None else f"{r.p50:.1f}{ratio(r.p50, first.p50)}"
                                   for r in results])
    row("recommendations p99 ms", ["" if r.p99 is None else f"{r.p99:.1f}{ratio(r.p99, first.p99)}"
                                   for r in results])
    row("raw vector bytes MiB", [f"{r.vector_bytes / mib:,.1f}" for r in results])
    for _, role in ROLES:
        rss = [r.memory.get(role, (0, 0, 0)) for r in results]
        row(f"{role} RSS / PSS MiB (procs)",
            [f"{a / mib:,.0f} / {b / mib:,.0f} ({c})" if c else "" for a, b, c in rss])
    for r in results:
        if r.stopped:
            print(f"  {r.items:,} items: {r.stopped}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", default="10000,100000",
                        help="catalog sizes, comma-separated")
    parser.add_argument("--encode-up-to", type=int, default=100_000,
                        help="larger catalogs are loaded with precomputed vector_b64 vectors")
    parser.add_argument("--max-minutes", type=float, default=60.0,
                        help="per size: past it, the import stops and the size says so")
    parser.add_argument("--min-free-gib", type=float, default=3.0,
                        help="the import stops when less memory than this is available")
    parser.add_argument("--settle-minutes", type=float, default=15.0,
                        help="how long to wait for the view to settle before measuring")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--port", type=int, default=8013)
    parser.add_argument("--data-dir", type=Path, default=Path(".portrait/bench-catalog"))
    parser.add_argument("--keep", action="store_true", help="keep each size's data dir")
    args = parser.parse_args()
    sizes = [int(s) for s in args.items.split(",") if s.strip()]
    results = []
    for n in sizes:
        print(f"== {n:,} items", flush=True)
        results.append(run_size(n, args, args.data_dir))
        report(results)  # so far: an interrupted run still leaves its table
    if len(results) > 1:
        print("\n(final table above)")


if __name__ == "__main__":
    main()
