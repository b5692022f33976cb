"""Baselines and Portrait variants, behind the runner's one :class:`~.runner.System` interface.

Pure: numpy and the standard library only, no I/O.

* :class:`MostPopular`: training interactions per item up to the test point (time-respecting:
  counting interactions that happen after the test point would leak future popularity).
* :class:`RecentPopular`: interactions in a trailing window before the test point; ties (items
  with equal window counts, e.g. all the zeros) are broken by all-time popularity.
* :class:`ItemKNN`: item-based collaborative filtering. Cosine similarity of the items' binary
  user vectors over the training events (``sim(i, j) = C[i, j] / sqrt(n_i n_j)``), pruned to
  each item's ``neighbors`` most similar items; a user's score for ``j`` is the sum of
  ``sim(i, j)`` over the items ``i`` in their visible history. With ``recency_half_life=h``
  (the sequence-aware variant, ``item-knn-seq``), item ``i`` weighs ``2^(-age/h)`` where
  ``age`` counts the user's distinct items interacted with since ``i`` (0 for the latest),
  a strong, simple baseline on data with sequential structure.
* :class:`EASE`: Steck's embarrassingly shallow autoencoder (WWW 2019), closed form and
  order-free. Over the same binary incidence ``X`` of training events,
  ``P = (X^T X + l2 I)^-1`` and ``B = I - P diag(1 / diag(P))``, so ``diag(B) = 0``: column
  ``j`` of ``B`` is the ridge regression of item ``j`` on every other item. A user's score is
  ``x_u B`` with ``x_u`` the 0/1 vector of their visible history.

Portrait variants are configurations of the real system (:func:`no_decay`, and text-only item
vectors through :func:`portrait.collaborative.combine` with ``alpha=0``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from portrait.config import DAY_SECONDS, ProfileConfig
from portrait.evaluation.runner import CaseContext
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent

NO_DECAY_HALF_LIFE_DAYS = 1e9  # ~2.7 million years: no measurable decay over any dataset


class _StatelessSession:
    def __init__(self, system: MostPopular | RecentPopular) -> None:
        self.system = system

    def observe(self, events: Sequence[Event]) -> None:
        """Popularity baselines keep no per-user state: their scores ignore the user."""

    def scores(self, ctx: CaseContext) -> np.ndarray:
        return self.system.score(ctx)


@dataclass
class MostPopular:
    name: str = "most-popular"

    def session(self, user_id: str) -> _StatelessSession:
        return _StatelessSession(self)

    def score(self, ctx: CaseContext) -> np.ndarray:
        return ctx.counts


@dataclass
class RecentPopular:
    window_days: float = 30.0
    name: str = "recent-popular"

    def session(self, user_id: str) -> _StatelessSession:
        return _StatelessSession(self)

    def score(self, ctx: CaseContext) -> np.ndarray:
        window = ctx.window_counts(self.window_days * DAY_SECONDS)
        total = ctx.counts
        # all-time counts scaled below 1 only break ties between equal window counts
        return window + total / (float(total.max()) + 1.0)


class HistoryScorer(Protocol):
    """A system that scores a user by the catalog rows of their visible history."""

    row_of: dict[str, int]
    recency_half_life: float | None

    def score_rows(self, rows: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
        """One score per catalog row for a history of ``rows`` (each scaled by its weight)."""
        ...


class HistorySession:
    """The rows a user wanted, in the order of their latest interaction, for a HistoryScorer."""

    def __init__(self, system: HistoryScorer) -> None:
        self.system = system
        self.last: dict[int, int] = {}  # row -> position of its latest interaction
        self.n = 0

    def observe(self, events: Sequence[Event]) -> None:
        row_of = self.system.row_of
        for ev in events:
            if isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES:
                r = row_of.get(ev.item_id)
                if r is not None:
                    self.last.pop(r, None)
                    self.last[r] = self.n
                    self.n += 1

    def scores(self, ctx: CaseContext) -> np.ndarray:
        rows = list(self.last)
        h = self.system.recency_half_life
        if h is None:
            return self.system.score_rows(rows)
        age = self.n - 1 - np.fromiter(self.last.values(), dtype=np.float64, count=len(rows))
        return self.system.score_rows(rows, np.exp2(-age / h))


class ItemKNN:
    """Item-kNN over a (users x items) binary incidence matrix of training events."""

    def __init__(
        self,
        incidence: np.ndarray,
        item_ids: Sequence[str],
        neighbors: int = 100,
        name: str = "item-knn",
        block: int = 1024,
        recency_half_life: float | None = None,
    ) -> None:
        if neighbors < 1:
            raise ValueError("neighbors must be at least 1")
        self.name = name
        self.neighbors = neighbors
        self.recency_half_life = recency_half_life
        self.row_of = {item: i for i, item in enumerate(item_ids)}
        x = np.asarray(incidence, dtype=np.float32)
        n_items = x.shape[1]
        self.n_items = n_items
        norms = np.sqrt(x.sum(axis=0))
        inv = np.where(norms > 0, 1.0 / np.where(norms > 0, norms, 1.0), 0.0).astype(np.float32)
        active = np.flatnonzero(norms > 0)
        k = min(neighbors, max(active.size - 1, 1))
        # neighbour lists of active items, as a CSR-like pair of (n_items, k) arrays
        self.nbr = np.zeros((n_items, k), dtype=np.int64)
        self.sim = np.zeros((n_items, k), dtype=np.float32)
        xa = x[:, active] * inv[active][None, :]
        for start in range(0, active.size, block):
            rows = active[start : start + block]
            s = xa[:, start : start + block].T @ xa  # (b, n_active) cosine
            s[np.arange(rows.size), np.arange(start, start + rows.size)] = 0.0  # no self
            part = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else np.tile(
                np.arange(s.shape[1]), (rows.size, 1)
            )
            vals = np.take_along_axis(s, part, axis=1)
            self.nbr[rows] = active[part]
            self.sim[rows] = vals

    @classmethod
    def with_neighbors(
        cls,
        other: ItemKNN,
        neighbors: int,
        name: str | None = None,
        recency_half_life: float | None = None,
    ) -> ItemKNN:
        """A copy keeping only the top ``neighbors`` of ``other``'s lists (for tuning)."""
        if neighbors > other.neighbors:
            raise ValueError("can only shrink the neighbourhood")
        new = cls.__new__(cls)
        new.name = name or other.name
        new.neighbors = neighbors
        new.recency_half_life = recency_half_life
        new.row_of = other.row_of
        new.n_items = other.n_items
        order = np.argsort(-other.sim, axis=1, kind="stable")[:, :neighbors]
        new.nbr = np.take_along_axis(other.nbr, order, axis=1)
        new.sim = np.take_along_axis(other.sim, order, axis=1)
        return new

    def session(self, user_id: str) -> HistorySession:
        return HistorySession(self)

    def score_rows(self, rows: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
        """Sum of the neighbour similarities of ``rows`` (each scaled by its weight)."""
        if not len(rows):
            return np.zeros(self.n_items)
        r = np.asarray(rows, dtype=np.int64)
        sims = self.sim[r].astype(np.float64)
        if weights is not None:
            sims *= np.asarray(weights, dtype=np.float64)[:, None]
        return np.bincount(self.nbr[r].ravel(), weights=sims.ravel(), minlength=self.n_items)


class EASE:
    """EASE over a (users x items) binary incidence matrix of training events.

    Only items with a training interaction get a row and column of ``B`` (an item nobody
    touched has no co-occurrence to learn from: it scores 0 and adds nothing), which keeps the
    solve to the active catalog. float32 throughout: the ridge term bounds the condition
    number of ``X^T X + l2 I`` by ``(largest eigenvalue + l2) / l2``, far from float32's limit
    at the regularisations that rank well, and it halves the memory of the two dense
    (items x items) matrices.
    """

    recency_half_life: float | None = None  # order-free: every history item weighs 1

    def __init__(
        self, incidence: np.ndarray, item_ids: Sequence[str], l2: float, name: str = "ease"
    ) -> None:
        if not l2 > 0:
            raise ValueError("l2 must be positive")
        self.name = name
        self.l2 = float(l2)
        self.row_of = {item: i for i, item in enumerate(item_ids)}
        x = np.asarray(incidence, dtype=np.float32)
        self.n_items = x.shape[1]
        self.active = np.flatnonzero(x.any(axis=0))
        self._index = np.full(self.n_items, -1, dtype=np.int64)
        self._index[self.active] = np.arange(self.active.size)
        xa = x[:, self.active]
        gram = xa.T @ xa
        diag = np.diag_indices(self.active.size)
        gram[diag] += np.float32(self.l2)
        p = np.linalg.inv(gram)
        del gram
        # B = I - P diag(1/diag(P)): off the diagonal B_ij = -P_ij / P_jj, in place
        p /= -np.diag(p)[None, :]
        p[diag] = 0.0
        self.weights = p

    def session(self, user_id: str) -> HistorySession:
        return HistorySession(self)

    def score_rows(self, rows: Sequence[int], weights: np.ndarray | None = None) -> np.ndarray:
        """``x B`` for ``x`` the 0/1 vector of ``rows`` (or their weights), per catalog row."""
        out = np.zeros(self.n_items)
        idx = self._index[np.asarray(rows, dtype=np.int64)]
        keep = idx >= 0
        if keep.any():
            w = np.ones(int(keep.sum())) if weights is None else np.asarray(weights)[keep]
            out[self.active] = w @ self.weights[idx[keep]].astype(np.float64)
        return out


def ease_l2_grid(incidence: np.ndarray, factors: Sequence[float]) -> list[float]:
    """EASE regularisations scaled to the data: ``factors`` times the mean item count.

    The diagonal of ``X^T X`` is each item's count, so a ridge term in units of it means the
    same on a small and a large data set (ml-latest-small's mean count is 10.3).
    """
    counts = np.asarray(incidence, dtype=np.float32).sum(axis=0)
    active = counts[counts > 0]
    scale = float(active.mean()) if active.size else 1.0
    # three significant digits: a candidate's name (f"ease:{l2:g}") then reads back exactly
    return [float(f"{f * scale:.3g}") for f in factors]


def no_decay(config: ProfileConfig) -> ProfileConfig:
    """``config`` with every half-life so long that nothing decays (all history weighs alike)."""
    return dataclasses.replace(
        config,
        long_half_life_days=NO_DECAY_HALF_LIFE_DAYS,
        short_half_life_days=NO_DECAY_HALF_LIFE_DAYS,
        tag_half_life_days=NO_DECAY_HALF_LIFE_DAYS,
    )
