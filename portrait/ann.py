"""Approximate nearest neighbours over an item space's rows, so ranking need not scan the catalog.

Pure: numpy and faiss, no I/O.

A :class:`VectorIndex` is a navigable small-world graph (HNSW, 32 links per row) over 8-bit
scalar-quantised codes of the rows (faiss ``IndexHNSWSQ``, inner product). A search walks the
graph with a candidate list of ``ef`` rows (at least twice the ``refine x n`` it takes: a
profile mixing several interests has neighbours in several regions), takes the best
``refine x n`` rows by their codes and, given the caller's vectors, re-scores those
exactly, so the order (and the score a ranker reads) is exact among what was found.

Why this one (``bench/bench_ann.py --survey``, one thread, 384-d rows). On our own vectors
(Magazine's items and review texts, 12.7k rows of the text encoder) recall@200 was 0.99 at
0.45 ms for this graph, where the inverted-file index of the same codes (faiss IVF-SQ8) needed
28% of its lists probed to reach 0.945 (its cost grows with the catalog at a fixed share);
hnswlib and voyager reached 0.97-0.99 too but keep float vectors in the index (1.7 KB per row)
or build slower; usearch's 8-bit graph reached 0.87. On synthetic, well separated clusters
the inverted file did better (0.998 against 0.85): real item spaces are not that.
The codes and the graph are about ``dim + 270`` bytes per row and never the vectors
themselves, which each process already shares (the item index's matrix).

Rows added after the build (:meth:`VectorIndex.add`) are linked into the graph: searchable
at once. A query for at least as many rows as the index holds (after ``refine``) scans every
code, so a small catalog is searched exhaustively.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable
from dataclasses import dataclass

import faiss
import numpy as np

# A header before faiss's own bytes: format version, ef, refine.
_HEADER = struct.Struct("<4sqd")
_MAGIC = b"PVI2"

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


class VectorIndex:
    """An approximate inner-product index over the rows of a float32 matrix (rows 0..len-1)."""

    def __init__(self, index: faiss.Index, ef: int, refine: float) -> None:
        """Wrap a faiss HNSW index of scalar-quantised codes (built here, loaded or mapped)."""
        if not isinstance(index, faiss.IndexHNSWSQ):
            raise ValueError(f"not an HNSW scalar-quantiser index: {type(index).__name__}")
        self._index = index
        self.ef = int(ef)
        self.refine = float(refine)

    @classmethod
    def build(
        cls,
        matrix: np.ndarray,
        *,
        seed: int = 0,
        ef: int = 256,
        refine: float = 2.0,
    ) -> VectorIndex:
        """Learn the codes' range on (a sample of) ``matrix`` and link every row.

        Args:
            seed: the rows the code range is learnt from, when there are many (the graph
                itself is deterministic for a given matrix).
            ef: the search's candidate list (at least twice the rows a search takes).
            refine: rows taken by their codes per row asked for, before exact re-scoring.
        """
        m = np.ascontiguousarray(matrix, dtype=np.float32)
        if m.ndim != 2 or m.shape[1] < 1:
            raise ValueError(f"expected a (rows, dim) matrix, got shape {m.shape}")
        n, dim = m.shape
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, LINKS,  # type: ignore[arg-type]
                                  faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = BUILD_EF
        if n == 0:  # nothing to learn from: a code range that holds unit vectors
            sample = np.stack([-np.ones(dim, np.float32), np.ones(dim, np.float32)])
        else:
            take = min(n, 100_000)
            rng = np.random.default_rng(seed)
            sample = m if take == n else m[np.sort(rng.choice(n, take, replace=False))]
        index.train(sample)
        if n:
            index.add(m)
        return cls(index, ef, refine)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    @property
    def dim(self) -> int:
        return int(self._index.d)

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``len .. len + m - 1`` (items upserted between builds)."""
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise ValueError(f"expected (m, {self.dim}) vectors, got shape {v.shape}")
        if v.shape[0]:
            self._index.add(v)

    def _candidates(self, query: np.ndarray, k: int) -> np.ndarray:
        n = len(self)
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        if k >= n:  # every row asked for: scan every code
            _, ids = self._index.storage.search(q, n)
        else:
            params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            params.efSearch = max(self.ef, 2 * k)  # measured: a list of k alone missed
            _, ids = self._index.search(q, k, params=params)
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
        out: np.ndarray = np.stack([self._index.reconstruct(int(r)) for r in rows]) if rows.size \
            else np.zeros((0, self.dim), np.float32)
        return out

    # -- shipping one copy to many processes ------------------------------------------------

    def to_bytes(self) -> bytes:
        """The whole index (lists, codes, settings): what a publisher puts in the object store
        once and every shard loads with :meth:`from_bytes`."""
        body = faiss.serialize_index(self._index)
        return _HEADER.pack(_MAGIC, self.ef, self.refine) + body.tobytes()

    @staticmethod
    def unpack(data: bytes | bytearray | memoryview | np.ndarray) -> tuple[int, float, np.ndarray]:
        """``(ef, refine, faiss's own bytes)`` of :meth:`to_bytes`' output.

        :meth:`from_bytes` copies the codes into each process that loads it. To hold one copy
        per node instead, write the faiss bytes to a file once (``/dev/shm``) and have every
        process map it: ``VectorIndex(faiss.read_index(path, faiss.IO_FLAG_MMAP), ef,
        refine)`` (the codes' pages are the OS's, shared by every process mapping the file;
        the graph's links are read into each process).
        """
        raw = np.frombuffer(data, dtype=np.uint8)
        magic, ef, refine = _HEADER.unpack(raw[: _HEADER.size].tobytes())
        if magic != _MAGIC:
            raise ValueError("not a serialised VectorIndex")
        return int(ef), float(refine), raw[_HEADER.size:]

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview | np.ndarray) -> VectorIndex:
        """The index :meth:`to_bytes` wrote (a copy of its codes in this process)."""
        ef, refine, body = cls.unpack(data)
        return cls(faiss.deserialize_index(np.array(body)), ef, refine)  # faiss copies it

    def nbytes(self) -> int:
        """Bytes of one loaded copy: codes and graph links (what each process holds)."""
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
