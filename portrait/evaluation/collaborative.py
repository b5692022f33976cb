"""Collaborative item vectors learnt from the event log, and their blend with text vectors.

Pure: numpy and the standard library only, no I/O. Everything here is built from the
*training* events a split hands over (``Split.train_events``), never from held-out ones.

Item embedding: truncated eigendecomposition of the shifted positive PMI (SPPMI) matrix of
item-item co-occurrence, the matrix-factorisation view of item2vec/word2vec (Levy & Goldberg,
2014). With ``C[i, j]`` the number of users who interacted with both ``i`` and ``j`` (diagonal
removed), ``r_i = sum_j C[i, j]`` and ``D = sum_i r_i``::

    SPPMI[i, j] = max(0, log(C[i, j] * D / (r_i * r_j)) - log(shift))
    E = U_d * sqrt(lambda_d)           (top-d positive eigenpairs; rows L2-normalised)

Size choices (numpy only, no scipy.sparse): the user x item incidence and the item x item
matrix are dense float32. A dense SPPMI of all 9,742 MovieLens items would be 380 MB, so only
items with at least ``min_count`` training users take part (ml-latest-small: 6,278 items at
``min_count=2``, a 160 MB matrix); the others get a zero collaborative vector and fall back to
their text vector in :func:`combine`. ``max_items`` caps the matrix for larger catalogs (the
most-interacted items are kept). The eigenvectors come from a seeded randomized range finder
with power iterations (Halko et al., 2011), a few matrix products instead of a full ``eigh``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.items import l2_normalise

# CollabSettings is defined with the tuned-config document that records it, so the service can
# read that document without importing this package.
from portrait.tuned_config import CollabSettings

MAX_DENSE_CELLS = 200_000_000  # users x items float32 incidence: 800 MB
DEFAULT_COLLAB = CollabSettings()


@dataclass(frozen=True)
class Interactions:
    """Binary user x item incidence of training events, over catalog rows.

    ``matrix[u, i] = 1`` when user ``users[u]`` has at least one item event on catalog row
    ``i`` (of the types the builder includes). Item events on items outside the
    catalog are ignored.
    """

    users: tuple[str, ...]
    matrix: np.ndarray  # (n_users, n_items) float32 of 0/1

    @property
    def item_counts(self) -> np.ndarray:
        """Distinct users per item."""
        return self.matrix.sum(axis=0)


def interactions(
    events: Iterable[Event],
    item_ids: Sequence[str],
    include_types: Iterable[str] = POSITIVE_ITEM_TYPES,
) -> Interactions:
    """The :class:`Interactions` of ``events`` over the catalog ``item_ids``.

    Only item events of ``include_types`` count (by default those that say the user wanted
    the item; a dismissal is not a co-occurrence).
    """
    row_of = {item: i for i, item in enumerate(item_ids)}
    keep = frozenset(include_types)
    users: dict[str, int] = {}
    us: list[int] = []
    rows: list[int] = []
    for ev in events:
        if isinstance(ev, ItemEvent) and ev.TYPE in keep:
            r = row_of.get(ev.item_id)
            if r is not None:
                us.append(users.setdefault(ev.user_id, len(users)))
                rows.append(r)
    n_users, n_items = len(users), len(item_ids)
    if n_users * n_items > MAX_DENSE_CELLS:
        raise ValueError(
            f"{n_users} users x {n_items} items is too large for the dense incidence matrix"
        )
    m = np.zeros((n_users, n_items), dtype=np.float32)
    if us:
        m[np.asarray(us), np.asarray(rows)] = 1.0
    return Interactions(tuple(users), m)


def sppmi_matrix(incidence: np.ndarray, shift: float = 1.0) -> np.ndarray:
    """Dense SPPMI of the item co-occurrence of a (users x items) 0/1 matrix, float32."""
    x = np.asarray(incidence, dtype=np.float32)
    c = x.T @ x  # (m, m) co-occurrence, float32 counts (exact below 2**24 users)
    np.fill_diagonal(c, 0.0)
    r = c.sum(axis=1, dtype=np.float64)
    total = float(r.sum())
    if total <= 0:
        return np.zeros_like(c)
    # log(C * D / (r_i r_j)) - log(shift), computed in place on the nonzero cells
    log_r = np.log(np.where(r > 0, r, 1.0)).astype(np.float32)
    nz = c > 0
    with np.errstate(divide="ignore"):
        np.log(c, out=c, where=nz)
    c += np.float32(np.log(total) - np.log(shift))
    c -= log_r[:, None]
    c -= log_r[None, :]
    c[~nz] = 0.0
    np.maximum(c, 0.0, out=c)
    return c


def randomized_eigh(
    matrix: np.ndarray, dim: int, oversample: int = 16, power_iterations: int = 3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate top eigenpairs (largest eigenvalue first) of a symmetric matrix."""
    n = matrix.shape[0]
    width = min(n, dim + oversample)
    rng = np.random.default_rng(seed)
    q = matrix @ rng.standard_normal((n, width)).astype(np.float32)
    q, _ = np.linalg.qr(q)
    for _ in range(power_iterations):
        q, _ = np.linalg.qr(matrix @ q.astype(np.float32))
    q = q.astype(np.float32)
    small = q.T @ (matrix @ q)
    small = (small + small.T) / 2.0
    vals, vecs = np.linalg.eigh(small.astype(np.float64))
    order = np.argsort(vals)[::-1][:dim]
    return vals[order], (q.astype(np.float64) @ vecs[:, order])


def sppmi_embedding(
    incidence: np.ndarray, settings: CollabSettings = DEFAULT_COLLAB
) -> np.ndarray:
    """``(n_items, dim)`` L2-normalised collaborative vectors; zero rows for items left out.

    ``incidence`` is the (users x items) matrix of :class:`Interactions` (training events only).
    """
    x = np.asarray(incidence, dtype=np.float32)
    n_items = x.shape[1]
    counts = x.sum(axis=0)
    keep = np.flatnonzero(counts >= settings.min_count)
    if keep.size > settings.max_items:
        top = np.argsort(-counts[keep], kind="stable")[: settings.max_items]
        keep = np.sort(keep[top])
    out = np.zeros((n_items, settings.dim), dtype=np.float32)
    if keep.size < 2:
        return out
    m = sppmi_matrix(x[:, keep], settings.shift)
    vals, vecs = randomized_eigh(
        m, settings.dim, settings.oversample, settings.power_iterations, settings.seed
    )
    del m
    positive = vals > 0
    emb = vecs[:, positive] * np.sqrt(vals[positive])[None, :]
    out[keep, : emb.shape[1]] = emb.astype(np.float32)
    return l2_normalise(out)


def combine(text_matrix: np.ndarray, collab_matrix: np.ndarray | None, alpha: float) -> np.ndarray:
    """Item vectors blending text and collaborative vectors, L2-normalised, float32.

    Each row is ``[sqrt(1 - alpha) * text, sqrt(alpha) * collab]`` of the two unit vectors, so
    the cosine of two rows is ``(1 - alpha) cos_text + alpha cos_collab`` (a weighted sum of
    similarities, which is what the profile's dot products need). Items without a collaborative
    vector (zero row) keep their text vector alone: ``[text, 0]``. ``alpha = 0`` is text only
    (the extra dimensions are zero); with ``collab_matrix=None`` the text matrix is returned.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    text = l2_normalise(text_matrix)
    if collab_matrix is None:
        return text
    collab = l2_normalise(collab_matrix)
    if collab.shape[0] != text.shape[0]:
        raise ValueError("text and collaborative matrices must have one row per item")
    has_collab = np.linalg.norm(collab, axis=1) > 0
    tw = np.where(has_collab, np.sqrt(1.0 - alpha), 1.0).astype(np.float32)[:, None]
    cw = np.float32(np.sqrt(alpha))
    return l2_normalise(np.hstack([text * tw, collab * cw]))
