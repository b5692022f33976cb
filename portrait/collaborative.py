"""Collaborative item vectors learnt from the event log, and their blend with text vectors.

Pure: numpy and scipy's sparse matrices, no I/O. Everything here is built from the
*training* events a split hands over (``Split.train_events``), never from held-out ones.

Item embedding: truncated eigendecomposition of the shifted positive PMI (SPPMI) matrix of
item-item co-occurrence, the matrix-factorisation view of item2vec/word2vec (Levy & Goldberg,
2014). With ``C[i, j]`` the number of users who interacted with both ``i`` and ``j`` (diagonal
removed), ``r_i = sum_j C[i, j]`` and ``D = sum_i r_i``::

    SPPMI[i, j] = max(0, log(C[i, j] * D / (r_i * r_j)) - log(shift))
    E = U_d * sqrt(lambda_d)           (top-d positive eigenpairs; rows L2-normalised)

Size choices: interactions are kept as (user, item) pairs and the SPPMI matrix is sparse,
built a block of item rows at a time with each item's strongest ``per_item`` entries kept
(:mod:`portrait.sppmi`), so memory grows with the kept entries and ``items x dim``, never with
``items^2``: ``max_nonzeros`` bounds the matrix (``per_item = max_nonzeros // items``) and
``max_user_items`` the co-occurrences one user adds. On the evaluation's data sets nothing is
dropped (ml-latest-small: 6,278 items at ``min_count=2``; its heaviest user has 2,698 items),
so the matrix is the dense formula's (:func:`sppmi_matrix`). Only items with at least
``min_count`` training users take part; the others get a zero collaborative vector and fall
back to their text vector in :func:`combine`. ``max_items`` caps the items with a vector (the
most interacted kept), and so the ``items x dim`` vectors. The eigenvectors come from a
seeded randomized range finder with power iterations (Halko et al., 2011,
:mod:`portrait.range_finder`): a few sparse matrix products instead of a full ``eigh``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from portrait.errors import NotEnoughInteractions
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent
from portrait.item_space import CollabSettings, ItemSpace
from portrait.items import ItemIndex, l2_normalise
from portrait.progress import Progress
from portrait.range_finder import randomized_eigh
from portrait.sppmi import sparse_sppmi, user_item_matrix

DEFAULT_COLLAB = CollabSettings()
# A sparse product costs far more than a dense one per stored cell here (scipy's is
# single-threaded: ml-latest-small's 33%-full SPPMI embedded in 31 s with sparse products, 15 s
# dense), so a matrix that is small and full enough is multiplied dense: at most DENSE_CELLS
# cells (600 MB, the old dense cap of 12,000 items) and at most DENSE_RATIO cells per entry.
DENSE_CELLS = 150_000_000
DENSE_RATIO = 16

StageProgress = Callable[[str, int, int], None]
"""``(stage, done, total)``: a computation in named stages (:func:`portrait.progress.stage_bars`
draws one bar per stage)."""


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


def sppmi_from_cooccurrence(c: np.ndarray, shift: float = 1.0) -> np.ndarray:
    """Dense SPPMI of an item co-occurrence matrix, float32, computed in place over ``c``
    (the reference :func:`portrait.sppmi.sparse_sppmi` equals; for small data and tests)."""
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


def sppmi_embedding(
    pairs: Interactions | np.ndarray,
    settings: CollabSettings = DEFAULT_COLLAB,
    progress: Progress | None = None,
    stages: StageProgress | None = None,
) -> np.ndarray:
    """``(n_items, dim)`` L2-normalised collaborative vectors; zero rows for items left out.

    ``pairs`` are the training interactions (a dense 0/1 users x items matrix is accepted
    too). ``progress`` is told about the co-occurrence blocks; ``stages`` (when given, instead)
    about each stage by name: ``co-occurrence``, then ``eigenvectors``.
    """
    if not isinstance(pairs, Interactions):
        users, rows = np.nonzero(np.asarray(pairs))
        pairs = Interactions(tuple(map(str, range(pairs.shape[0]))), users, rows, pairs.shape[1])
    keep, emb = item_vectors(pairs, settings, progress, stages)
    out = np.zeros((pairs.n_items, settings.dim), dtype=np.float32)
    out[keep, : emb.shape[1]] = emb
    return out


def kept_items(pairs: Interactions, settings: CollabSettings) -> np.ndarray:
    """The item rows that get a collaborative vector, ascending: those with at least
    ``min_count`` users, at most ``max_items`` of them (the most interacted kept)."""
    counts = pairs.item_counts
    keep = np.flatnonzero(counts >= settings.min_count)
    if keep.size > settings.max_items:
        top = np.argsort(-counts[keep], kind="stable")[: settings.max_items]
        keep = np.sort(keep[top])
    return keep


def item_vectors(
    pairs: Interactions,
    settings: CollabSettings = DEFAULT_COLLAB,
    progress: Progress | None = None,
    stages: StageProgress | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept item rows (:func:`kept_items`) and their L2-normalised vectors, float32
    ``(len(rows), dim)`` (an item with no positive SPPMI gets a zero row; fewer positive
    eigenvalues than ``dim``: zero columns): what
    :func:`sppmi_embedding` scatters into the catalog's rows, without its zero rows."""
    keep = kept_items(pairs, settings)
    if keep.size < 2:
        return keep, np.zeros((keep.size, settings.dim), dtype=np.float32)
    col = np.full(pairs.n_items, -1, dtype=np.int64)
    col[keep] = np.arange(keep.size)
    cols = col[pairs.item_rows]
    mask = cols >= 0
    x = user_item_matrix(pairs.user_index[mask], cols[mask], (len(pairs.users), keep.size),
                  settings.max_user_items, settings.seed)
    per_item = settings.max_nonzeros // keep.size if settings.max_nonzeros > 0 else 0
    cooc = stage_progress(stages, "co-occurrence") if stages is not None else progress
    m = sparse_sppmi(x, settings.shift, max(per_item, 1) if per_item else 0, cooc)
    del x
    cells = m.shape[0] * m.shape[1]
    factor: np.ndarray | sparse.csr_matrix = m
    if cells <= min(DENSE_CELLS, DENSE_RATIO * m.nnz):
        factor = m.toarray()
    del m
    _, emb = randomized_eigh(
        factor, settings.dim, settings.oversample, settings.power_iterations, settings.seed,
        stage_progress(stages, "eigenvectors"), scaled=True,
    )
    del factor
    # (n, dim) with zero columns: norms over the full width, as the dense pipeline's were
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb /= np.where(norms == 0.0, 1.0, norms)
    return keep, emb


def stage_progress(stages: StageProgress | None, name: str) -> Progress | None:
    """The :class:`Progress` of one named stage of ``stages`` (None: none)."""
    if stages is None:
        return None

    def progress(done: int, total: int, /, **figures: float) -> None:
        stages(name, done, total)

    return progress


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
    stages: StageProgress | None = None,
) -> ItemSpace:
    """Collaborative vectors of the items in ``pairs`` (rows of ``item_ids``), by the same
    :func:`item_vectors` the evaluation's :func:`sppmi_embedding` uses (``progress`` and
    ``stages`` as there).

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
    keep, emb = item_vectors(pairs, settings, progress, stages)
    covered = np.flatnonzero(np.linalg.norm(emb, axis=1) > 0)
    # One copy at most: at a million items each is 2 GB.
    vectors = emb if covered.size == emb.shape[0] else emb[covered]
    del emb
    return ItemSpace(
        0,
        tuple(item_ids[i] for i in keep[covered]),
        vectors,
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
