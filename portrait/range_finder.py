"""Top eigenpairs of a large symmetric matrix by a randomized range finder.

Pure: numpy and scipy's sparse matrices, no I/O. The seeded range finder with power
iterations of Halko, Martinsson & Tropp (2011): a few products with the matrix (dense or
sparse) and the eigendecomposition of a small ``width x width`` matrix, instead of a full
``eigh``. :func:`portrait.collaborative.item_vectors` factorises the SPPMI matrix with it.

Memory is a few ``n x width`` float32 blocks besides the matrix: the random start is drawn
and the eigenvectors formed a block of rows at a time, and the bases are orthonormalised in
place at catalog scale (see :func:`_orthonormal`).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from portrait.progress import Progress

ROW_CHUNK = 32_768  # rows per block of float64 work: 140 MB at width 528
QR_CELLS = 4_000_000  # n x width up to which LAPACK's QR orthonormalises (see _orthonormal)


def randomized_eigh(
    matrix: np.ndarray | sparse.spmatrix,
    dim: int,
    oversample: int = 16,
    power_iterations: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
    *,
    scaled: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top eigenpairs (largest eigenvalue first) of a symmetric matrix, dense or
    sparse: its eigenvalues (float64) and ``(n, <= dim)`` eigenvectors (float32); ``scaled``:
    only the positive ones, each times the root of its eigenvalue, in an ``(n, dim)`` array
    whose other columns are zero (the multiplication in float64, before the
    float32 cast, as the dense pipeline did).

    Memory is a few ``n x (dim + oversample)`` float32 blocks besides the matrix: the random
    start is drawn and the eigenvectors formed a block of rows at a time. ``progress`` is told
    about the products with the matrix (``power_iterations + 2`` of them).
    """
    n = matrix.shape[0]
    width = min(n, dim + oversample)
    steps = power_iterations + 2
    rng = np.random.default_rng(seed)
    start = np.empty((n, width), dtype=np.float32)
    for lo in range(0, n, ROW_CHUNK):  # the same draws as one (n, width) call
        start[lo : lo + ROW_CHUNK] = rng.standard_normal((min(ROW_CHUNK, n - lo), width))
    y = np.asarray(matrix @ start, dtype=np.float32)
    del start
    q = _orthonormal(y, passes=1 if power_iterations else 2)
    del y
    for step in range(power_iterations):
        if progress is not None:
            progress(step + 1, steps)
        y = np.asarray(matrix @ q, dtype=np.float32)
        del q
        q = _orthonormal(y, passes=1 if step < power_iterations - 1 else 2)
        del y
    if progress is not None:
        progress(steps - 1, steps)
    small = q.T @ np.asarray(matrix @ q, dtype=np.float32)
    small = (small + small.T) / 2.0
    vals, vecs = np.linalg.eigh(small.astype(np.float64))
    order = np.argsort(vals)[::-1][:dim]
    vecs = vecs[:, order]
    # Scaled: the positive ones lead (vals descend); multiplied after the product, in the
    # dense pipeline's order of operations, so the small data sets get its exact vectors.
    keep = int(np.count_nonzero(vals[order] > 0)) if scaled else order.size
    roots = np.sqrt(vals[order[:keep]])[None, :] if scaled else None
    out = np.zeros((n, dim if scaled else keep), dtype=np.float32)
    for lo in range(0, n, ROW_CHUNK):
        block = q[lo : lo + ROW_CHUNK].astype(np.float64) @ vecs
        out[lo : lo + ROW_CHUNK, :keep] = block if roots is None else block[:, :keep] * roots
    if progress is not None:
        progress(steps, steps)
    return vals[order[:keep]], out


def _orthonormal(y: np.ndarray, passes: int = 2) -> np.ndarray:
    """An orthonormal basis (float32) of the columns of ``y``, overwriting ``y`` when it can.

    LAPACK's QR up to ``QR_CELLS`` cells (the evaluation's data sets). Above, its cost and
    copies grow with ``n x width^2`` and it took a minute at 100k rows on this machine, so the
    basis comes from the Gram matrix instead: ``Y V diag(lambda)^-1/2`` over the eigenpairs of
    ``Y^T Y`` (accumulated in float64 a block of rows at a time; applied in float32). One
    pass spans the same columns, which is all a power iteration needs; a second restores the
    orthogonality the first loses to rounding, for the final basis. Directions with no weight
    are dropped, so a rank-deficient ``y`` gives fewer columns rather than noise.
    """
    if y.size <= QR_CELLS:
        q, _ = np.linalg.qr(y)
        return np.asarray(q, dtype=np.float32)
    for _ in range(passes):
        gram = np.zeros((y.shape[1], y.shape[1]), dtype=np.float64)
        for lo in range(0, y.shape[0], ROW_CHUNK):
            block = y[lo : lo + ROW_CHUNK].astype(np.float64)
            gram += block.T @ block
        lam, v = np.linalg.eigh(gram)
        good = lam > lam.max() * 1e-12
        t = (v[:, good] / np.sqrt(lam[good])[None, :]).astype(np.float32)
        # Rows are independent: with every column kept, each block is rewritten in place.
        out = y if t.shape[1] == y.shape[1] else np.empty((y.shape[0], t.shape[1]), np.float32)
        for lo in range(0, y.shape[0], ROW_CHUNK):
            out[lo : lo + ROW_CHUNK] = y[lo : lo + ROW_CHUNK] @ t
        y = out
    return y
