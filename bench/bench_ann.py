"""Approximate retrieval against the exact scan, measured in the same run, on one thread.

For each catalog size (synthetic clustered unit rows, 384 wide like the text encoder's):

* the index: build seconds (faiss's own threads), bytes per item of one loaded copy (codes,
  row ids, centroids; the float vectors are the caller's and not counted), recall@200 of the
  re-scored search against the exact top 200;
* search of the 200 nearest rows: the exact scan (a column-major matrix-vector product and a
  partition, what ``portrait.ranking.score_items`` does) and the index (codes, then exact
  re-scoring of the found rows), p50 / p99 in ms and their ratio;
* a whole blend recommendation (``portrait.ranking.recommend``, k=10, popularity and tags on)
  for profiles of a few viewed items: exact and over the index (``ann=``), p50 / p99.

The ratios at the end compare each size's index p50 with the smallest size's (the target:
recommendation p50 at 1M items <= 1.5x the p50 at 10k, p99 <= 30 ms).

    ./dev bench ann [--sizes 10000,100000,1000000] [--queries 200] [--survey 100000]

``--survey N`` instead compares the candidate libraries (faiss HNSW-SQ8 and IVF-SQ8,
hnswlib, usearch, voyager) on our own vectors when the evaluation's cache holds them
(Magazine's items and review texts) and on N synthetic rows: the measurement behind the
choice in ``portrait/ann.py``.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from portrait.ann import AnnSettings, VectorIndex
from portrait.config import ProfileConfig
from portrait.events import ItemViewed, RecordedEvent
from portrait.fold import replay
from portrait.items import ItemIndex
from portrait.ranking import AnnCatalog, RankingConfig, TagTable, popularity_scores, recommend

DIM = 384
K = 200
TAGS = tuple(f"tag{j}" for j in range(500))


def clustered(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """Unit rows around ``n / 500`` random centres, made in chunks (bounded memory)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((max(50, n // 500), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        stop = min(n, start + 100_000)
        block = centres[rng.integers(0, len(centres), stop - start)]
        block += 0.05 * rng.standard_normal((stop - start, dim), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def blends(m: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Profile-like queries: the normalised mean of a few rows."""
    rng = np.random.default_rng(seed)
    qs = np.stack([m[rng.integers(0, len(m), rng.integers(1, 6))].mean(0) for _ in range(n)])
    out: np.ndarray = (qs / np.linalg.norm(qs, axis=1, keepdims=True)).astype(np.float32)
    return out


def pct(times: list[float]) -> tuple[float, float]:
    a = np.asarray(times) * 1e3
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def timed(fn, args_list) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for a in args_list:
        t = time.perf_counter()
        fn(a)
        out.append(time.perf_counter() - t)
    return out


def one_size(n: int, queries: int) -> dict[str, float]:
    import faiss

    m = clustered(n)
    qs = blends(m, queries)
    t = time.perf_counter()
    index = VectorIndex.build(m)
    build_s = time.perf_counter() - t
    faiss.omp_set_num_threads(1)
    row: dict[str, float] = {"n": n, "build_s": build_s, "bytes_item": index.nbytes() / n}
    with threadpool_limits(1):
        cm = np.asfortranarray(m)
        exact_top = [np.argpartition(-(cm @ q), K - 1)[:K] for q in qs]
        exact = timed(lambda q: np.argpartition(-(cm @ q), K - 1)[:K], qs)
        found = [index.search(q, K, m) for q in qs]
        approx = timed(lambda q: index.search(q, K, m), qs)
        row["recall"] = float(np.mean([np.intersect1d(a, b).size / K
                                       for a, b in zip(exact_top, found, strict=True)]))
        row["exact_p50"], row["exact_p99"] = pct(exact)
        row["ann_p50"], row["ann_p99"] = pct(approx)
        # whole recommendations
        rng = np.random.default_rng(2)
        ids = [f"i{k}" for k in range(n)]
        tags = [tuple(TAGS[j] for j in rng.integers(0, len(TAGS), 3)) for _ in range(n)]
        items = ItemIndex(ids, m, tags)
        table = TagTable(items)
        pop = popularity_scores(rng.zipf(1.5, n).astype(np.float64))
        ann = AnnCatalog(index, table, pop, AnnSettings(force=True))
        config, ranking = ProfileConfig(), RankingConfig()
        states = []
        for u in range(min(queries, 100)):
            viewed = rng.integers(0, n, rng.integers(1, 6))
            evs = [ItemViewed(f"e{u}-{j}", f"u{u}", 1e9 + j, ids[r]) for j, r in enumerate(viewed)]
            recs = [RecordedEvent(j + 1, j + 1, 0.0, e) for j, e in enumerate(evs)]
            states.append(replay(recs, config, items, user_id=f"u{u}"))
        for s in states[:3]:  # warm: the column-major copy, the tag layouts
            recommend(s, config, ranking, items, table, 10, popularity=pop)
            recommend(s, config, ranking, items, table, 10, popularity=pop, ann=ann)
        ex = timed(lambda s: recommend(s, config, ranking, items, table, 10, popularity=pop),
                   states)
        ap = timed(lambda s: recommend(s, config, ranking, items, table, 10, popularity=pop,
                                       ann=ann), states)
        row["rec_exact_p50"], row["rec_exact_p99"] = pct(ex)
        row["rec_ann_p50"], row["rec_ann_p99"] = pct(ap)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return row


def real_vectors() -> np.ndarray | None:
    """Our own vectors when the evaluation's cache holds them: Magazine's items and review
    texts from the text encoder (12.7k rows), unit length."""
    cache = Path(".portrait/cache")
    parts = [np.load(p) for p in sorted(cache.glob("amazon-magazine-test-*.npy"))[:1]]
    parts += [np.load(p) for p in sorted(cache.glob("amazon-magazine-text-events-*.npy"))[:1]]
    if len(parts) < 2:
        return None
    m = np.vstack(parts).astype(np.float32)
    out: np.ndarray = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    return out


def survey(m: np.ndarray, queries: int) -> None:
    """The candidate libraries on the rows of ``m``: build, search p50/p99, recall@200."""
    import faiss
    import hnswlib
    import voyager
    from usearch.index import Index

    n, dim = m.shape
    qs = blends(m, queries)
    exact = [np.argpartition(-(m @ q), K - 1)[:K] for q in qs]

    def report(name: str, build_s: float, fn, nbytes: int) -> None:  # type: ignore[no-untyped-def]
        found = [fn(q) for q in qs]
        p50, p99 = pct(timed(fn, qs))
        recall = np.mean([np.intersect1d(a, b[:K]).size / K for a, b in zip(exact, found,
                                                                             strict=True)])
        print(f"{name:38s} build {build_s:6.1f} s  p50 {p50:5.2f} ms  p99 {p99:5.2f} ms  "
              f"recall@200 {recall:.3f}  bytes/item {nbytes / n:6.0f}", flush=True)

    def rescored(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
        rows = rows[rows >= 0]
        out: np.ndarray = rows[np.argsort(-(m[rows] @ q))]
        return out

    t = time.perf_counter()
    index = VectorIndex.build(m)
    report("VectorIndex: HNSW-SQ8 + IVF-SQ8 (chosen)", time.perf_counter() - t,
           lambda q: index.search(q, K, m), index.nbytes())
    faiss.omp_set_num_threads(1)
    with threadpool_limits(1):
        t = time.perf_counter()
        lists = int(2 * np.sqrt(n))
        ivf: Any = faiss.index_factory(dim, f"IVF{lists},SQ8", faiss.METRIC_INNER_PRODUCT)
        ivf.train(m[np.random.default_rng(0).choice(n, min(n, 64 * lists), replace=False)])
        ivf.add(m)
        b = time.perf_counter() - t
        for share in (0.025, 0.1):
            ivf.nprobe = max(1, int(share * lists))
            report(f"faiss IVF{lists}-SQ8 probing {share:.1%} + re-score", b,
                   lambda q: rescored(ivf.search(q[None], 2 * K)[1][0], q),
                   faiss.serialize_index(ivf).nbytes)
        t = time.perf_counter()
        hn = hnswlib.Index(space="ip", dim=dim)
        hn.init_index(max_elements=n, M=16, ef_construction=100, random_seed=0)
        hn.set_num_threads(1)
        hn.add_items(m, np.arange(n))
        b = time.perf_counter() - t
        hn.set_ef(400)
        with tempfile.TemporaryDirectory() as d:
            hn.save_index(f"{d}/i")
            size = os.path.getsize(f"{d}/i")
        report("hnswlib M16 ef400", b, lambda q: hn.knn_query(q[None], k=K)[0][0].astype(np.int64),
               size)
        t = time.perf_counter()
        u = Index(ndim=dim, metric="ip", dtype="i8", connectivity=16, expansion_add=100,
                  expansion_search=400)
        u.add(np.arange(n), m, threads=1)
        b = time.perf_counter() - t
        report("usearch i8 M16 ef400 + re-score", b,
               lambda q: rescored(np.asarray(u.search(q, 2 * K, threads=1).keys, np.int64), q),
               len(u.save() or b""))
        t = time.perf_counter()
        vi = voyager.Index(voyager.Space.InnerProduct, num_dimensions=dim, M=16,
                           ef_construction=100, storage_data_type=voyager.StorageDataType.E4M3)
        vi.add_items(m, np.arange(n), num_threads=1)
        b = time.perf_counter() - t
        report("voyager E4M3 M16 ef800 + re-score", b,
               lambda q: rescored(np.asarray(vi.query(q, k=2 * K, num_threads=1, query_ef=800)[0],
                                             np.int64), q), len(vi.as_bytes()))
    gc.collect()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--survey", type=int, default=0, metavar="N",
                        help="compare the candidate libraries on N rows instead")
    args = parser.parse_args()
    if args.survey:
        real = real_vectors()
        if real is not None:
            print(f"our vectors (Magazine items and review texts): {len(real)} rows")
            survey(real, args.queries)
        print(f"synthetic clustered rows: {args.survey}")
        survey(clustered(args.survey), args.queries)
        return
    rows = []
    print(f"{'items':>9} {'build s':>8} {'B/item':>7} {'recall':>7} | search p50/p99 ms: "
          f"{'exact':>13} {'index':>13} {'ratio':>6} | recommend p50/p99 ms: {'exact':>13} "
          f"{'index':>13} {'ratio':>6}")
    for n in (int(s) for s in args.sizes.split(",")):
        r = one_size(n, args.queries)
        rows.append(r)
        print(f"{n:9d} {r['build_s']:8.1f} {r['bytes_item']:7.0f} {r['recall']:7.3f} | "
              f"{'':19}{r['exact_p50']:6.2f}/{r['exact_p99']:6.2f} "
              f"{r['ann_p50']:6.2f}/{r['ann_p99']:6.2f} {r['ann_p50'] / r['exact_p50']:6.2f} | "
              f"{'':22}{r['rec_exact_p50']:6.2f}/{r['rec_exact_p99']:6.2f} "
              f"{r['rec_ann_p50']:6.2f}/{r['rec_ann_p99']:6.2f} "
              f"{r['rec_ann_p50'] / r['rec_exact_p50']:6.2f}", flush=True)
        gc.collect()
    base = rows[0]
    for r in rows[1:]:
        print(f"{int(r['n']):,} items vs {int(base['n']):,}: index search p50 x"
              f"{r['ann_p50'] / base['ann_p50']:.2f}, recommendation over the index p50 x"
              f"{r['rec_ann_p50'] / base['rec_ann_p50']:.2f} (exact x"
              f"{r['rec_exact_p50'] / base['rec_exact_p50']:.2f}), p99 "
              f"{r['rec_ann_p99']:.1f} ms")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB")


if __name__ == "__main__":
    main()
