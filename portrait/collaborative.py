"""Collaborative item vectors learnt from the event log, and their blend with text vectors.

Pure: numpy and the standard library only, no I/O. Everything here is built from the
*training* events a split hands over (``Split.train_events``), never from held-out ones.

Item embedding: truncated eigendecomposition of the shifted positive PMI (SPPMI) matrix of
item-item co-occurrence, the matrix-factorisation view of item2vec/word2vec (Levy & Goldberg,
2014). With ``C[i, j]`` the number of users who interacted with both ``i`` and ``j`` (diagonal
removed), ``r_i = sum_j C[i, j]`` and ``D = sum_i r_i``::

    SPPMI[i, j] = max(0, log(C[i, j] * D / (r_i * r_j)) - log(shift))
    E = U_d * sqrt(lambda_d)           (top-d positive eigenpairs; rows L2-normalised)

Size choices (numpy only, no scipy.sparse): interactions are kept as (user, item) pairs and the
item x item co-occurrence is accumulated over chunks of users (a dense users x items block of
at most ``CHUNK_CELLS`` cells at a time), so memory grows with the kept items, not the users;
the item x item matrix is dense float32. A dense SPPMI of all 9,742 MovieLens items would be
380 MB, so only items with at least ``min_count`` training users take part (ml-latest-small:
6,278 items at ``min_count=2``, a 160 MB matrix); the others get a zero collaborative vector and
fall back to their text vector in :func:`combine`. ``max_items`` caps the matrix for larger
catalogs (the most-interacted items are kept). The eigenvectors come from a seeded randomized
range finder with power iterations (Halko et al., 2011), a few matrix products instead of a
full ``eigh``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from portrait.errors import NotEnoughInteractions
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.item_space import CollabSettings, ItemSpace
from portrait.items import ItemIndex, l2_normalise
from portrait.progress import Progress

CHUNK_CELLS = 16_000_000  # users x kept items per co-occurrence block: 64 MB of float32
DEFAULT_COLLAB = CollabSettings()


@dataclass(frozen=True)
class Interactions:
    """Which users interacted with which items: distinct (user, item row) pairs.

    ``item_rows[k]`` is a row of the item list the builder was given, ``user_index[k]`` an
    index into ``users``; a pair is stored once however many events made it.
    """

    users: tuple[str, ...]
    user_index: np.ndarray  # (pairs,) int64
    item_rows: np.ndarray  # (pairs,) int64
    n_items: int

    @property
    def item_counts(self) -> np.ndarray:
        """Distinct users per item row."""
        return np.bincount(self.item_rows, minlength=self.n_items).astype(np.float32)

    @property
    def matrix(self) -> np.ndarray:
        """The dense (users x items) 0/1 incidence; for small data and tests."""
        m = np.zeros((len(self.users), self.n_items), dtype=np.float32)
        m[self.user_index, self.item_rows] = 1.0
        return m


def interactions(
    events: Iterable[Event],
    item_ids: Sequence[str],
    include_types: Iterable[str] = POSITIVE_ITEM_TYPES,
) -> Interactions:
    """The :class:`Interactions` of ``events`` over the items ``item_ids``.

    Only item events of ``include_types`` count (by default those that say the user wanted
    the item; a dismissal is not a co-occurrence); events on other items are ignored.
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
    return pairs_interactions(tuple(users), us, rows, len(item_ids))


def pairs_interactions(
    users: tuple[str, ...], user_index: Sequence[int], item_rows: Sequence[int], n_items: int
) -> Interactions:
    """:class:`Interactions` from (user, item row) pairs, duplicates removed."""
    if not len(user_index):
        empty = np.zeros(0, dtype=np.int64)
        return Interactions(users, empty, empty, n_items)
    code = np.unique(
        np.asarray(user_index, dtype=np.int64) * max(n_items, 1) + np.asarray(item_rows, np.int64)
    )
    return Interactions(users, code // max(n_items, 1), code % max(n_items, 1), n_items)


def cooccurrence(
    pairs: Interactions, keep: np.ndarray, progress: Progress | None = None
) -> np.ndarray:
    """``X^T X`` over the items ``keep`` (rows of ``pairs``' items), float32 counts (exact
    below 2**24 users), accumulated over blocks of users so no users x items matrix exists."""
    n_keep = keep.size
    col = np.full(pairs.n_items, -1, dtype=np.int64)
    col[keep] = np.arange(n_keep)
    cols = col[pairs.item_rows]
    mask = cols >= 0
    users, cols = pairs.user_index[mask], cols[mask]
    order = np.argsort(users, kind="stable")
    users, cols = users[order], cols[order]
    n_users = len(pairs.users)
    block = max(1, CHUNK_CELLS // max(n_keep, 1))
    steps = max(1, -(-n_users // block))
    bounds = np.searchsorted(users, np.arange(steps + 1) * block)
    c = np.zeros((n_keep, n_keep), dtype=np.float32)
    for step in range(steps):
        lo, hi = int(bounds[step]), int(bounds[step + 1])
        if hi > lo:
            first = step * block
            x = np.zeros((min(block, n_users - first), n_keep), dtype=np.float32)
            x[users[lo:hi] - first, cols[lo:hi]] = 1.0
            c += x.T @ x
        if progress is not None:
            progress(step + 1, steps)
    return c


def sppmi_from_cooccurrence(c: np.ndarray, shift: float = 1.0) -> np.ndarray:
    """SPPMI of an item co-occurrence matrix, float32, computed in place over ``c``."""
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


def sppmi_matrix(incidence: np.ndarray, shift: float = 1.0) -> np.ndarray:
    """Dense SPPMI of the item co-occurrence of a (users x items) 0/1 matrix, float32."""
    x = np.asarray(incidence, dtype=np.float32)
    return sppmi_from_cooccurrence(x.T @ x, shift)


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
    pairs: Interactions | np.ndarray,
    settings: CollabSettings = DEFAULT_COLLAB,
    progress: Progress | None = None,
) -> np.ndarray:
    """``(n_items, dim)`` L2-normalised collaborative vectors; zero rows for items left out.

    ``pairs`` are the training interactions (a dense 0/1 users x items matrix is accepted
    too). ``progress`` is told about the co-occurrence blocks.
    """
    if not isinstance(pairs, Interactions):
        users, rows = np.nonzero(np.asarray(pairs))
        pairs = Interactions(tuple(map(str, range(pairs.shape[0]))), users, rows, pairs.shape[1])
    n_items = pairs.n_items
    counts = pairs.item_counts
    keep = np.flatnonzero(counts >= settings.min_count)
    if keep.size > settings.max_items:
        top = np.argsort(-counts[keep], kind="stable")[: settings.max_items]
        keep = np.sort(keep[top])
    out = np.zeros((n_items, settings.dim), dtype=np.float32)
    if keep.size < 2:
        return out
    m = sppmi_from_cooccurrence(cooccurrence(pairs, keep, progress), settings.shift)
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


# -- item spaces: what a retrain publishes (the values are in portrait.item_space) -----------


def train_item_space(
    pairs: Interactions,
    item_ids: Sequence[str],
    settings: CollabSettings,
    *,
    trained_through: int,
    events: int,
    progress: Progress | None = None,
) -> ItemSpace:
    """Collaborative vectors of the items in ``pairs`` (rows of ``item_ids``), by the same
    :func:`sppmi_embedding` the evaluation uses.

    Raises:
        NotEnoughInteractions: fewer than two items with ``settings.min_count`` users; the
            message says what there is.
    """
    counts = pairs.item_counts
    eligible = int(np.count_nonzero(counts >= settings.min_count))
    if eligible < 2:
        raise NotEnoughInteractions(
            f"{len(pairs.users)} users with item events over {int(np.count_nonzero(counts))} "
            f"items; collaborative vectors need at least 2 items with >= {settings.min_count} "
            f"users each ({eligible} so far): keeping text vectors"
        )
    emb = sppmi_embedding(pairs, settings, progress)
    covered = np.flatnonzero(np.linalg.norm(emb, axis=1) > 0)
    return ItemSpace(
        0,
        tuple(item_ids[i] for i in covered),
        np.ascontiguousarray(emb[covered]),
        trained_through,
        events,
        settings,
    )


def blended_index(text: ItemIndex, space: ItemSpace, alpha: float) -> ItemIndex:
    """``text`` (a text-only index) in ``space`` at collaborative share ``alpha``, blended by
    :func:`combine` (what the evaluation ranks with).

    Rows and ids stay those of ``text``; an item the space does not cover (new since the
    retrain) keeps its text vector, ``[text, 0]``; space items outside the catalog are ignored.
    """
    collab = np.zeros((len(text), space.vectors.shape[1]), dtype=np.float32)
    rows = text.rows_of(list(space.item_ids))
    known = rows >= 0
    collab[rows[known]] = space.vectors[known]
    return ItemIndex(
        text.ids,
        combine(text.matrix, collab, alpha),
        text.all_tags(),
        text.model_id,
        text_dim=text.dim,
        space_version=space.version,
    )
