"""The SPPMI matrix of item co-occurrence, sparse and built in bounded memory.

Pure: numpy and scipy's sparse matrices, no I/O. :func:`portrait.collaborative.sppmi_embedding`
factorises what :func:`sparse_sppmi` builds; the values are those of the dense formula there.

Why sparse, and the bounds that replace the old dense matrix's ``items x items`` cells:

* **Blocks of item rows.** ``C = X^T X`` (``X`` the users x items 0/1 incidence) is computed a
  block of item rows at a time (a scipy sparse product), each block holding at most
  ``BLOCK_PRODUCTS`` user-item products; the row sums the PMI needs come from ``X`` directly
  (``r_i = sum_u x_ui (n_u - 1)``), so no block needs another.
* **Top-K per item.** Each row keeps its ``per_item`` largest positive SPPMI values; the result
  is symmetrised by keeping an entry either side kept, so the matrix holds at most
  ``2 * per_item * items`` entries (a popular item's row may hold more than ``2 * per_item``:
  those of the items that kept it). With ``per_item`` at least a row's positive entries (the
  small data sets), nothing is dropped and the matrix is the dense one's.
* **Long histories.** A user with ``n`` items adds ``n^2`` co-occurrences, so a history longer
  than ``max_user_items`` is thinned (:func:`user_item_matrix`) to a seeded random sample of
  that many of its items, bounding any user's cost at ``max_user_items^2``.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from portrait.progress import Progress

BLOCK_PRODUCTS = 24_000_000  # user-item products per block of C's rows: ~200 MB of scratch


def user_item_matrix(
    user_index: np.ndarray,
    item_cols: np.ndarray,
    shape: tuple[int, int],
    max_user_items: int = 0,
    seed: int = 0,
) -> sparse.csr_matrix:
    """The (users x items) 0/1 matrix of (user, item column) pairs, float32, duplicates merged.

    A user with more than ``max_user_items`` items (0: no cap) keeps a random sample of that
    many, drawn from a generator seeded with ``seed`` in (user, item) order, so the same pairs
    always give the same sample.
    """
    x = sparse.csr_matrix(
        (np.ones(len(user_index), dtype=np.float32),
         (np.asarray(user_index, np.int64), np.asarray(item_cols, np.int64))),
        shape=shape,
    )
    x.sum_duplicates()
    x.data[:] = 1.0
    lengths = np.diff(x.indptr)
    if max_user_items <= 0 or lengths.size == 0 or lengths.max() <= max_user_items:
        return x
    rows = np.repeat(np.arange(shape[0]), lengths)
    order = np.lexsort((np.random.default_rng(seed).random(rows.size), rows))
    rank = np.empty(rows.size, dtype=np.int64)
    rank[order] = np.arange(rows.size) - x.indptr[rows[order]]
    keep = rank < max_user_items
    return sparse.csr_matrix(
        (x.data[keep], (rows[keep], x.indices[keep])), shape=shape, dtype=np.float32
    )


def row_blocks(products: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges whose ``products`` sum to at most ``budget`` (a row over it
    alone is a block of its own)."""
    bounds = [0]
    total = 0.0
    for i, p in enumerate(products.tolist()):
        if total + p > budget and i > bounds[-1]:
            bounds.append(i)
            total = 0.0
        total += p
    bounds.append(len(products))
    return [(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:], strict=True) if hi > lo]


def by_row_then_strength(rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """The order sorting entries by row, then by value descending, ties kept in the order
    given: ``np.lexsort((-vals, rows))`` for positive ``vals``, as one stable sort of an int64
    key (row, then the value's bits, which order positive floats as their values do), 14x
    faster than the lexsort on 20M entries here."""
    bits = np.ascontiguousarray(vals, dtype=np.float32).view(np.int32)
    key = (rows.astype(np.int64) << 31) | (np.int32(0x7FFF_FFFF) - bits).astype(np.int64)
    order: np.ndarray = np.argsort(key, kind="stable")
    return order


def strongest_per_row(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, k: int, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """The ``k`` largest positive ``vals`` of each row (ties: in the order given, so lower
    column first for a canonical matrix), rows sorted; and whether any row lost entries."""
    counts = np.bincount(rows, minlength=n_rows)
    if counts.size == 0 or counts.max() <= k:
        return rows, cols, vals, False
    heavy = counts[rows] > k
    hr, hc, hv = rows[heavy], cols[heavy], vals[heavy]
    order = by_row_then_strength(hr, hv)
    hr, hc, hv = hr[order], hc[order], hv[order]
    first = np.searchsorted(hr, hr, side="left")
    top = (np.arange(hr.size) - first) < k
    light = ~heavy
    rows = np.concatenate([rows[light], hr[top]])
    cols = np.concatenate([cols[light], hc[top]])
    vals = np.concatenate([vals[light], hv[top]])
    order = np.argsort(rows, kind="stable")
    return rows[order], cols[order], vals[order], True


def sparse_sppmi(
    x: sparse.csr_matrix,
    shift: float = 1.0,
    per_item: int = 0,
    progress: Progress | None = None,
) -> sparse.csr_matrix:
    """The (items x items) SPPMI of the incidence ``x`` (users x items), float32, symmetric,
    its diagonal empty; each row's ``per_item`` largest values kept (0: all) and those that
    kept it, see the module docstring. ``progress`` is told about the blocks of rows.

    Per cell, ``max(0, log(C_ij D / (r_i r_j)) - log(shift))`` in float32 in the dense
    formula's order of operations, so the kept values equal the dense matrix's.
    """
    n = x.shape[1]
    lengths = np.diff(x.indptr).astype(np.float64)
    xt = x.T.tocsr()  # items x users
    r = xt @ (lengths - 1.0)  # C's row sums without its diagonal
    total = float(r.sum())
    if total <= 0:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    log_r = np.log(np.where(r > 0, r, 1.0)).astype(np.float32)
    offset = np.float32(np.log(total) - np.log(shift))
    blocks = row_blocks(xt @ lengths, BLOCK_PRODUCTS)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    cut = False
    for step, (lo, hi) in enumerate(blocks):
        c = (xt[lo:hi] @ x).tocsr()
        c.sort_indices()  # ties among the strongest go to lower columns
        rows = np.repeat(np.arange(lo, hi, dtype=np.int32), np.diff(c.indptr))
        cols = c.indices.astype(np.int32)
        vals = np.log(c.data.astype(np.float32))
        del c
        vals += offset
        vals -= log_r[rows]
        vals -= log_r[cols]
        keep = (vals > 0) & (rows != cols)
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        if per_item > 0:
            rows, cols, vals, dropped = strongest_per_row(rows - lo, cols, vals, per_item, hi - lo)
            rows = rows + np.int32(lo)
            cut = cut or dropped
        parts.append((rows, cols, vals))
        if progress is not None:
            progress(step + 1, len(blocks))
    if not parts:
        return sparse.csr_matrix((n, n), dtype=np.float32)
    rows, cols, vals = (np.concatenate(p) for p in zip(*parts, strict=True))
    del parts
    m = sparse.csr_matrix((vals, (rows, cols)), shape=(n, n), dtype=np.float32)
    del rows, cols, vals
    # Cut rows broke the symmetry: keep an entry when either side kept it (its value is the
    # same both sides, so the elementwise maximum is the union).
    return m.maximum(m.T).tocsr() if cut else m
