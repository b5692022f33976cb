"""Approximate nearest neighbours over an item space's rows, so ranking need not scan the catalog.

Pure: numpy and faiss, no I/O.

A :class:`VectorIndex` is an inverted-file index of 8-bit scalar-quantised codes (faiss
``IndexIVFScalarQuantizer``, inner product): k-means lists over the rows, each row stored as
one byte per dimension. A search probes the ``nprobe`` lists nearest the query, takes the best
``refine x n`` rows by their codes and, given the caller's vectors, re-scores those exactly, so
the order (and the score a ranker reads) is exact among what was found.

Why this one (measured by ``bench/bench_ann.py --survey``, one thread, clustered 384-d rows):
at 100k rows it had recall@200 0.998 at 0.4 ms p50 and built in 10 s, where the HNSW graphs
(hnswlib, faiss HNSW, usearch, voyager) either reached 0.80-0.88 at similar latency or stored
the float vectors in the index (1.7 KB per row). The codes are a quarter of the float32 vectors
and the index never holds the vectors themselves: each process that loads it keeps about
``dim + 8`` bytes per row (codes and row ids) plus the centroids, and re-scores against the
vectors it already shares (the item index's matrix).

Rows added after the build (:meth:`VectorIndex.add`) go to their nearest list with the build's
quantiser: searchable at once, at the recall of the lists they fell in, until the next build.
A query for at least as many rows as the index holds (after ``refine``) probes every list, so a
small catalog is searched exhaustively.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

# A header before faiss's own bytes: format version, nprobe, refine.
_HEADER = struct.Struct("<4sqd")
_MAGIC = b"PVI1"

Vectors = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class AnnSettings:
    """When ranking uses an approximate index, and how hard it looks.

    Attributes:
        exact_below: catalogs smaller than this are ranked exactly (a scan of 50k rows costs
            a few milliseconds and is exact); at and above it the index serves.
        force: use the index at any size (tests, the evaluation's ``--ann``).
        popular: the most popular rows every blend request also scores exactly.
        tag_rows: per strong tag of the user, at most this many rows carrying it (the most
            popular) are scored exactly.
        exact_tags_below: a tag filter matching fewer rows than this scores them all exactly
            instead of searching the index.
    """

    exact_below: int = 50_000
    force: bool = False
    popular: int = 300
    tag_rows: int = 200
    exact_tags_below: int = 20_000

    def serves(self, n_items: int) -> bool:
        """Whether a catalog of ``n_items`` rows is ranked through the index."""
        return self.force or n_items >= self.exact_below


def _n_lists(n: int) -> int:
    """About 2 sqrt(n) lists, at least ~40 rows each (fewer lists below ~80 rows)."""
    return max(1, min(int(2 * math.sqrt(n)), n // 40))


def _default_nprobe(n_lists: int) -> int:
    """2.5% of the lists, at least 16 (bounded by the lists there are)."""
    return min(n_lists, max(16, math.ceil(0.025 * n_lists)))


class VectorIndex:
    """An approximate inner-product index over the rows of a float32 matrix (rows 0..len-1)."""

    def __init__(self, index: faiss.Index, nprobe: int, refine: float) -> None:
        """Wrap a faiss IVF scalar-quantiser index (built here, loaded or mapped)."""
        if not isinstance(index, faiss.IndexIVFScalarQuantizer):
            raise ValueError(f"not an IVF scalar-quantiser index: {type(index).__name__}")
        self._index = index
        self.nprobe = int(nprobe)
        self.refine = float(refine)

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        *,
        seed: int = 0,
        n_lists: int | None = None,
        nprobe: int | None = None,
        refine: float = 2.0,
    ) -> VectorIndex:
        """Train the lists and the quantiser on (a sample of) ``matrix`` and add every row.

        Args:
            n_lists: k-means lists (default about ``2 sqrt(rows)``).
            nprobe: lists probed per query (default 2.5% of them, at least 16).
            refine: rows taken by their codes per row asked for, before exact re-scoring.
        """
        m = np.ascontiguousarray(matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] < 1:
            raise ValueError(f"expected a (rows, dim) matrix, got shape {m.shape}")
        n, dim = m.shape
        lists = _n_lists(n) if n_lists is None else max(1, min(int(n_lists), max(n, 1)))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, lists, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = int(seed)
        index.cp.max_points_per_centroid = 64  # the sample k-means sees: ~64 rows per list
        index.cp.min_points_per_centroid = 1  # a small catalog has few rows per list: fine
        if n == 0:  # nothing to learn from: a code range that holds unit vectors
            sample = np.stack([-np.ones(dim, np.float32), np.ones(dim, np.float32)])
        else:
            rng = np.random.default_rng(seed)
            take = min(n, 64 * lists)
            sample = m if take == n else m[np.sort(rng.choice(n, take, replace=False))]
        index.train(sample)
        if n:
            index.add(m)
        return cls(index, nprobe if nprobe is not None else _default_nprobe(lists), refine)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    @property
    def n_lists(self) -> int:
        return int(self._index.nlist)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``len .. len + m - 1`` (items upserted between builds)."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected (m, {self.dim}) vectors, got shape {v.shape}")
        if v.shape[0]:
            self._index.add(v)

    def _candidates(self, query: np.ndarray, k: int) -> np.ndarray:
        n = len(self)
        params = faiss.SearchParametersIVF()
        # enough lists to hold about twice the rows asked for (a deep over-fetch probes more)
        wanted = math.ceil(2 * k * self.n_lists / n)
        params.nprobe = self.n_lists if k >= n else min(max(self.nprobe, wanted), self.n_lists)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        _, ids = self._index.search(q, min(k, n), params=params)
        rows: np.ndarray = ids[0]
        return rows[rows >= 0].astype(np.int64)

    def search(
        self, query: np.ndarray, n: int, vectors: Vectors | np.ndarray | None = None
    ) -> np.ndarray:
        """Up to ``n`` rows best first (int64). With ``vectors`` (the rows' float32 vectors:
        the matrix the index was built from, or a function of rows), ``refine x n`` rows are
        found by their codes and re-scored exactly; without, the codes' order is returned."""
        return self.search_scored(query, n, vectors)[0]

    def search_scored(
        self, query: np.ndarray, n: int, vectors: Vectors | np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` with each row's score: exact with ``vectors``, else the codes'
        approximation (float32 either way). Ties are broken by row."""
        if n <= 0 or len(self) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if vectors is None:
            rows = self._candidates(query, n)
            q = np.ascontiguousarray(query, dtype=np.float32)
            approx: np.ndarray = self._reconstruct(rows) @ q
            order = np.lexsort((rows, -approx))
            return rows[order], approx[order]
        rows = self._candidates(query, max(n, math.ceil(self.refine * n)))
        vecs = vectors[rows] if isinstance(vectors, np.ndarray) else vectors(rows)
        scores: np.ndarray = (vecs @ np.asarray(query, dtype=np.float32)).astype(np.float32)
        order = np.lexsort((rows, -scores))[:n]
        return rows[order], scores[order]

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The codes' vectors of ``rows`` (only for a search without the caller's vectors)."""
        self._index.make_direct_map(True)
        out: np.ndarray = np.stack([self._index.reconstruct(int(r)) for r in rows]) if rows.size \
            else np.zeros((0, self.dim), np.float32)
        return out

    # -- shipping one copy to many processes ------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole index (lists, codes, settings): what a publisher puts in the object store
        once and every shard loads with :meth:`from_bytes`."""
        self._index.make_direct_map(False)  # not shipped: rebuilt where it is needed
        body = faiss.serialize_index(self._index)
        return _HEADER.pack(_MAGIC, self.nprobe, self.refine) + body.tobytes()

    @staticmethod
    def unpack(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, float, np.ndarray]:
        """``(nprobe, refine, faiss's own bytes)`` of :meth:`to_bytes`' output.

        :meth:`from_bytes` copies the codes into each process that loads it. To hold one copy
        per node instead, write the faiss bytes to a file once (``/dev/shm``) and have every
        process map it: ``VectorIndex(faiss.read_index(path, faiss.IO_FLAG_MMAP), nprobe,
        refine)`` (the pages are the OS's, shared by every process mapping the file).
        """
        raw = np.frombuffer(data, dtype=np.uint8)
        magic, nprobe, refine = _HEADER.unpack(raw[: _HEADER.size].tobytes())
        if magic != _MAGIC:
            raise ValueError("not a serialised VectorIndex")
        return int(nprobe), float(refine), raw[_HEADER.size:]

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | np.ndarray) -> VectorIndex:
        """The index :meth:`to_bytes` wrote (a copy of its codes in this process)."""
        nprobe, refine, body = cls.unpack(data)
        return cls(faiss.deserialize_index(np.array(body)), nprobe, refine)  # faiss copies it

    def nbytes(self) -> int:
        """Bytes of one loaded copy: codes, row ids, centroids (what each process holds)."""
        return int(faiss.serialize_index(self._index).nbytes)


def recall_at(
    matrix: np.ndarray, index: VectorIndex, queries: np.ndarray, n: int, *, rescore: bool = True
) -> float:
    """Mean fraction of each query's exact top ``n`` rows of ``matrix`` the index returns."""
    m = np.asarray(matrix, dtype=np.float32)
    qs = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if len(m) == 0 or qs.shape[0] == 0:
        return 1.0
    want = min(n, len(m))
    hits = 0
    for q in qs:
        exact = np.argpartition(-(m @ q), want - 1)[:want]
        found = index.search(q, want, m if rescore else None)
        hits += int(np.intersect1d(exact, found).size)
    return float(hits / (want * qs.shape[0]))
