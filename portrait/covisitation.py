"""Item-to-item models learnt from the event log: co-occurrence and transitions.

Pure: numpy and scipy's sparse matrices, no I/O.

Both are kept as neighbour lists, ``k`` per item (rows of the catalog), so scoring a user is
one gather and one ``bincount`` over the user's recent items, whatever the catalog size:

* :func:`cooccurrence` links items that the same users interacted with, by cosine over the
  users' binary vectors, ``C[i, j] / sqrt(n_i n_j)`` (the evaluation's item-kNN);
* :func:`transitions` links an item to the items users reached *after* it, within ``window``
  steps of their sequence, each pair weighing ``2^-(gap - 1)``, normalised by
  ``sqrt(out(i) in(j))`` so a hub that follows everything does not dominate.

A user is scored by :meth:`Neighbours.score` with their recent items weighted by recency
(``2^(-age / half_life)``, age counted in distinct items since, 0 for the newest): what
followed what, time-decayed on the user's side.

Size: lists are stored as int32 rows and float32 weights, ``k`` trimmed to the longest list
(8 bytes a slot: 800 MB for 1M items at ``k = 100``, not 1.2 GB), and :func:`cooccurrence`
is computed a block of item rows at a time (as :mod:`portrait.sppmi` does), so no
items x items product is ever whole in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import sparse

from portrait.sppmi import BLOCK_PRODUCTS, by_row_then_strength, row_blocks


@dataclass(frozen=True)
class Neighbours:
    """``k`` neighbours per item: ``nbr[i]`` rows, ``sim[i]`` their weights (0 = none)."""

    nbr: np.ndarray  # (n_items, k) int32 (int64 in bundles stored before)
    sim: np.ndarray  # (n_items, k) float32
    # Catalog rows in all: items appended after the lists were bound (a catalog delta) have
    # none, and are scored 0 until the next retrain (see :meth:`grown`).
    rows: int = 0

    @property
    def n_items(self) -> int:
        return max(int(self.nbr.shape[0]), self.rows)

    def grown(self, n_items: int) -> Neighbours:
        """These lists over a catalog grown to ``n_items`` rows (the new rows without lists):
        no copy of the lists."""
        return replace(self, rows=n_items)

    def score(self, rows: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Per catalog row: the summed neighbour weights of ``rows``, each scaled by its weight."""
        listed = rows < self.nbr.shape[0]
        if not listed.all():
            rows, weights = rows[listed], weights[listed]
        if rows.size == 0 or self.nbr.shape[1] == 0:
            return np.zeros(self.n_items, dtype=np.float64)
        sims = self.sim[rows].astype(np.float64) * weights[:, None]
        return np.bincount(self.nbr[rows].ravel(), weights=sims.ravel(), minlength=self.n_items)

    def scores_of(self, rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`score` without the catalog-wide array: the rows with a neighbour weight
        (ascending, zero weights included) and their sums, the same values :meth:`score`
        gives there. What a ranker over a large catalog reads (cost: ``len(rows) x k``)."""
        listed = rows < self.nbr.shape[0]  # rows appended after the lists have none
        if not listed.all():
            rows, weights = rows[listed], weights[listed]
        if rows.size == 0 or self.nbr.shape[1] == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        sims = self.sim[rows].astype(np.float64) * weights[:, None]
        found, at = np.unique(self.nbr[rows].ravel(), return_inverse=True)
        return found.astype(np.int64), np.bincount(at, weights=sims.ravel(), minlength=found.size)

    def remap(self, rows: np.ndarray, n_items: int) -> Neighbours:
        """These lists in another catalog: ``rows[i]`` is item ``i``'s row there (-1: absent).

        Neighbours absent from the new catalog get weight 0; items new to it get no list.
        """
        k = self.nbr.shape[1]
        nbr = np.zeros((n_items, k), dtype=np.int32)
        sim = np.zeros((n_items, k), dtype=np.float32)
        present = rows >= 0
        mapped = np.where(self.nbr >= 0, rows[np.maximum(self.nbr, 0)], -1)
        keep_sim = np.where(mapped >= 0, self.sim, 0.0).astype(np.float32)
        nbr[rows[present]] = np.maximum(mapped[present], 0)
        sim[rows[present]] = keep_sim[present]
        return Neighbours(nbr, sim)


def _top_k(matrix: sparse.csr_matrix, k: int) -> Neighbours:
    """The ``k`` largest entries of each row of a sparse matrix (diagonal excluded)."""
    n = matrix.shape[0]
    m = matrix.tocoo()
    off = m.row != m.col
    nbr = np.zeros((n, k), dtype=np.int32)
    sim = np.zeros((n, k), dtype=np.float32)
    _fill(nbr, sim, m.row[off], m.col[off], m.data[off].astype(np.float32))
    return _trimmed(nbr, sim)


def _fill(
    nbr: np.ndarray, sim: np.ndarray, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray
) -> None:
    """Each row's strongest entries into ``nbr``/``sim`` rows, strongest first (ties in the
    order given: ascending columns for a canonical matrix)."""
    k = nbr.shape[1]
    order = by_row_then_strength(rows, vals)  # cosines and transition weights are positive
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, rows, side="left")
    pos = np.arange(rows.size) - starts
    keep = pos < k
    nbr[rows[keep], pos[keep]] = cols[keep]
    sim[rows[keep], pos[keep]] = vals[keep]


def _trimmed(nbr: np.ndarray, sim: np.ndarray) -> Neighbours:
    """Without the columns no row fills (at least one, so the shape stays (n, k))."""
    used = int(np.count_nonzero(sim, axis=1).max()) if sim.size else 0
    width = max(used, 1) if sim.shape[1] else 0
    return Neighbours(np.ascontiguousarray(nbr[:, :width]), np.ascontiguousarray(sim[:, :width]))


def cooccurrence(sequences: Sequence[np.ndarray], n_items: int, k: int = 100) -> Neighbours:
    """Cosine neighbours over the users' binary item vectors (one sequence of rows per user)."""
    if k < 1:
        raise ValueError("k must be at least 1")
    users = np.repeat(np.arange(len(sequences)), [len(s) for s in sequences])
    items = np.concatenate(sequences) if sequences else np.zeros(0, dtype=np.int64)
    x = sparse.csr_matrix(
        (np.ones(items.size, dtype=np.float32), (users, items)), shape=(len(sequences), n_items)
    )
    x.sum_duplicates()
    x.data[:] = 1.0  # binary, whatever the repeats
    counts = np.asarray(x.sum(axis=0)).ravel()
    inv = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1.0)), 0.0).astype(np.float32)
    xn = (x @ sparse.diags(inv)).tocsr()
    xnt = xn.T.tocsr()  # items x users
    nbr = np.zeros((n_items, k), dtype=np.int32)
    sim = np.zeros((n_items, k), dtype=np.float32)
    products = xnt.astype(bool).astype(np.float64) @ np.diff(x.indptr).astype(np.float64)
    for lo, hi in row_blocks(np.asarray(products), BLOCK_PRODUCTS):
        block = (xnt[lo:hi] @ xn).tocsr()
        block.sort_indices()
        rows = np.repeat(np.arange(lo, hi), np.diff(block.indptr))
        off = rows != block.indices
        _fill(nbr, sim, rows[off], block.indices[off], block.data[off].astype(np.float32))
    return _trimmed(nbr, sim)


def transitions(
    sequences: Sequence[np.ndarray], n_items: int, k: int = 100, window: int = 3
) -> Neighbours:
    """What followed what: pairs (earlier, later) within ``window`` steps, ``2^-(gap-1)`` each."""
    if k < 1 or window < 1:
        raise ValueError("k and window must be at least 1")
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    wts: list[np.ndarray] = []
    for seq in sequences:
        for gap in range(1, min(window, len(seq) - 1) + 1):
            src.append(seq[:-gap])
            dst.append(seq[gap:])
            wts.append(np.full(len(seq) - gap, 2.0 ** -(gap - 1), dtype=np.float32))
    if not src:
        return _trimmed(np.zeros((n_items, k), np.int32), np.zeros((n_items, k), np.float32))
    s, d, w = np.concatenate(src), np.concatenate(dst), np.concatenate(wts)
    t = sparse.csr_matrix((w, (s, d)), shape=(n_items, n_items))
    t.sum_duplicates()
    out_w = np.asarray(t.sum(axis=1)).ravel()
    in_w = np.asarray(t.sum(axis=0)).ravel()
    norm_out = np.where(out_w > 0, 1.0 / np.sqrt(np.maximum(out_w, 1e-12)), 0.0)
    norm_in = np.where(in_w > 0, 1.0 / np.sqrt(np.maximum(in_w, 1e-12)), 0.0)
    t = sparse.diags(norm_out.astype(np.float32)) @ t @ sparse.diags(norm_in.astype(np.float32))
    return _top_k(t.tocsr(), k)
