"""Approximate nearest neighbours over an item space's rows, so ranking need not scan the catalog.

Pure: numpy and faiss, no I/O.

A :class:`VectorIndex` holds the rows as 8-bit scalar-quantised codes in two faiss indexes
(inner product) and unites their candidates: a navigable small-world graph (HNSW, 32 links
per row; the search's list holds ``ef`` rows, at least twice what it takes) and inverted
lists (k-means, about ``2 sqrt(rows)`` lists, ``nprobe`` of them probed: 2.5%, at least 16).
The best ``refine x n`` rows of each by their codes are re-scored exactly against the
caller's vectors, so the order (and the score a ranker reads) is exact among what was found.

Why both (``bench/bench_ann.py --survey``, one thread, 384-d rows): each misses where the
other does not. On our own vectors (Magazine's items and review texts, 12.7k rows of the
text encoder) the graph reached recall@200 0.999 and the lists 0.73 at 2.5% of their probes
(0.945 only at 28%); on synthetic well-separated clusters the lists reached 1.000 at 1M rows
and the graph 0.74 (a profile mixing several clusters leaves the graph's walk in one of
them). hnswlib and voyager behaved like the graph but keep float vectors in the index (1.7 KB
per row) or build slower; usearch's 8-bit graph reached 0.87. The two indexes keep about
``2 dim + 270`` bytes per row (codes twice, links, list ids), never the float vectors, which
each process already shares (the item index's matrix).

Rows added after the build (:meth:`VectorIndex.add`) are linked into the graph and put in
their nearest list: searchable at once. A query for at least as many rows as the index holds
(after ``refine``) scans every code, so a small catalog is searched exhaustively.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

# A header before faiss's own bytes: format version, ef, nprobe, refine, the graph's length.
_HEADER = struct.Struct("<4sqqdq")
_MAGIC = b"PVI3"

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


LINKS = 32  # graph links per row (64 on the bottom layer)
BUILD_EF = 40  # candidate list while linking: measured as good as 80 on our vectors, faster


def _n_lists(n: int) -> int:
    """About 2 sqrt(n) lists, at least ~40 rows each (fewer lists below ~80 rows)."""
    return max(1, min(int(2 * math.sqrt(n)), n // 40))


class VectorIndex:
    """An approximate inner-product index over the rows of a float32 matrix (rows 0..len-1):
    a graph and inverted lists over the same 8-bit codes, whose candidates are united."""

    def __init__(
        self, graph: faiss.Index, lists: faiss.Index, ef: int, nprobe: int, refine: float
    ) -> None:
        """Wrap faiss's HNSW and IVF scalar-quantiser indexes (built here, loaded or mapped)."""
        if not isinstance(graph, faiss.IndexHNSWSQ):
            raise ValueError(f"not an HNSW scalar-quantiser index: {type(graph).__name__}")
        if not isinstance(lists, faiss.IndexIVFScalarQuantizer):
            raise ValueError(f"not an IVF scalar-quantiser index: {type(lists).__name__}")
        self._graph, self._lists = graph, lists
        self.ef, self.nprobe, self.refine = int(ef), int(nprobe), float(refine)

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        *,
        seed: int = 0,
        ef: int = 256,
        nprobe: int | None = None,
        refine: float = 2.0,
    ) -> VectorIndex:
        """Learn the codes' range and the lists on (a sample of) ``matrix``, add every row.

        Args:
            seed: the sample the codes and lists are learnt from, when there are many rows.
            ef: the graph search's candidate list (at least twice the rows it takes).
            nprobe: lists probed per query (default 2.5% of them, at least 16).
            refine: rows taken by their codes per row asked for, before exact re-scoring.
        """
        m = np.ascontiguousarray(matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] < 1:
            raise ValueError(f"expected a (rows, dim) matrix, got shape {m.shape}")
        n, dim = m.shape
        qt = faiss.ScalarQuantizer.QT_8bit
        graph = faiss.IndexHNSWSQ(dim, qt, LINKS, faiss.METRIC_INNER_PRODUCT)  # type: ignore[arg-type]
        graph.hnsw.efConstruction = BUILD_EF
        n_lists = _n_lists(n)
        lists = faiss.IndexIVFScalarQuantizer(
            faiss.IndexFlatIP(dim), dim, n_lists, qt, faiss.METRIC_INNER_PRODUCT
        )
        lists.cp.seed = int(seed)
        lists.cp.max_points_per_centroid = 64  # the sample k-means sees: ~64 rows per list
        lists.cp.min_points_per_centroid = 1  # a small catalog has few rows per list: fine
        if n == 0:  # nothing to learn from: a code range that holds unit vectors
            sample = np.stack([-np.ones(dim, np.float32), np.ones(dim, np.float32)])
        else:
            take = min(n, max(64 * n_lists, 20_000))
            rng = np.random.default_rng(seed)
            sample = m if take == n else m[np.sort(rng.choice(n, take, replace=False))]
        graph.train(sample)
        lists.train(sample)
        if n:
            graph.add(m)
            lists.add(m)
        default_probe = min(n_lists, max(16, math.ceil(0.025 * n_lists)))
        return cls(graph, lists, ef, default_probe if nprobe is None else nprobe, refine)

    def __len__(self) -> int:
        return int(self._graph.ntotal)

    @property
    def dim(self) -> int:
        return int(self._graph.d)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``len .. len + m - 1`` (items upserted between builds): linked into
        the graph and put in their nearest list."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected (m, {self.dim}) vectors, got shape {v.shape}")
        if v.shape[0]:
            self._graph.add(v)
            self._lists.add(v)

    def _candidates(self, query: np.ndarray, k: int) -> np.ndarray:
        n = len(self)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if k >= n:  # every row asked for: scan every code
            _, ids = self._graph.storage.search(q, n)
            every: np.ndarray = ids[0]
            return every[every >= 0].astype(np.int64)
        walk = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
        walk.efSearch = max(self.ef, 2 * k)  # measured: a list of k alone missed
        _, near = self._graph.search(q, k, params=walk)
        probe = faiss.SearchParametersIVF()
        n_lists = int(self._lists.nlist)
        # enough lists to hold about twice the rows asked for (a deep over-fetch probes more)
        probe.nprobe = min(max(self.nprobe, math.ceil(2 * k * n_lists / n)), n_lists)
        _, listed = self._lists.search(q, k, params=probe)
        rows = np.unique(np.concatenate([near[0], listed[0]]))
        out: np.ndarray = rows[rows >= 0].astype(np.int64)
        return out

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
        q = np.ascontiguousarray(query, dtype=np.float32)
        if vectors is None:
            rows = self._candidates(q, n)
            scores: np.ndarray = self._reconstruct(rows) @ q
        else:
            rows = self._candidates(q, max(n, math.ceil(self.refine * n)))
            vecs = vectors[rows] if isinstance(vectors, np.ndarray) else vectors(rows)
            scores = (vecs @ q).astype(np.float32)
        order = np.lexsort((rows, -scores))[:n]
        return rows[order], scores[order]

    def _reconstruct(self, rows: np.ndarray) -> np.ndarray:
        """The codes' vectors of ``rows`` (only for a search without the caller's vectors)."""
        out: np.ndarray = np.stack([self._graph.reconstruct(int(r)) for r in rows]) \
            if rows.size else np.zeros((0, self.dim), np.float32)
        return out

    # -- shipping one copy to many processes ------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole index (graph, lists, codes, settings): what a publisher puts in the
        object store once and every shard loads with :meth:`from_bytes`."""
        graph = faiss.serialize_index(self._graph).tobytes()
        lists = faiss.serialize_index(self._lists).tobytes()
        head = _HEADER.pack(_MAGIC, self.ef, self.nprobe, self.refine, len(graph))
        return head + graph + lists

    @staticmethod
    def unpack(
        data: bytes | bytearray | memoryview | np.ndarray,
    ) -> tuple[tuple[int, int, float], np.ndarray, np.ndarray]:
        """``((ef, nprobe, refine), graph bytes, lists bytes)`` of :meth:`to_bytes`' output.

        :meth:`from_bytes` copies the codes into each process that loads it. To hold one copy
        per node instead, write the two faiss parts to files once (``/dev/shm``) and have
        every process map them: ``VectorIndex(faiss.read_index(graph_path,
        faiss.IO_FLAG_MMAP), faiss.read_index(lists_path, faiss.IO_FLAG_MMAP), *settings)``
        (the codes' pages are the OS's, shared by every process mapping the files).
        """
        raw = np.frombuffer(data, dtype=np.uint8)
        if raw.size < _HEADER.size:
            raise ValueError("not a serialised VectorIndex")
        magic, ef, nprobe, refine, graph_len = _HEADER.unpack(raw[: _HEADER.size].tobytes())
        if magic != _MAGIC:
            raise ValueError("not a serialised VectorIndex")
        body = raw[_HEADER.size:]
        return (int(ef), int(nprobe), float(refine)), body[:graph_len], body[graph_len:]

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | np.ndarray) -> VectorIndex:
        """The index :meth:`to_bytes` wrote (a copy of its codes in this process)."""
        settings, graph, lists = cls.unpack(data)
        return cls(faiss.deserialize_index(np.array(graph)),
                   faiss.deserialize_index(np.array(lists)), *settings)

    def nbytes(self) -> int:
        """Bytes of one loaded copy: codes, links, lists (what each process holds)."""
        return int(faiss.serialize_index(self._graph).nbytes
                   + faiss.serialize_index(self._lists).nbytes)


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
