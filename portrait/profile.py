"""The profile: the state derived from a user's events by a pure, order-independent fold.

Time weighting. With reference time ``t_ref`` (the latest event time folded), each decayed
quantity is ``S = sum_i w_i * x_i * 2^(-(t_ref - t_i) / h)``. The brief's incremental form
(``S = S * 2^(-(t - t_ref)/h) + w*x`` for a newer event, ``S += w*x*2^(-(t_ref - t)/h)`` for an
older one) computes exactly this sum; we store it relative to a fixed *anchor* time instead,
``A = sum_i w_i * x_i * 2^((t_i - anchor) / h)`` so that ``S = A * 2^(-(t_ref - anchor) / h)``.
Adding an event is then one multiply-add, whatever its time, with no rescaling of every tag
weight; the anchor moves forward (rescaling once) only before the exponent could overflow.
Because ``A`` is a plain sum, the result does not depend on arrival order: replay equals the
live state, and a snapshot plus its tail equals a full replay (both are property-tested).

Independence from the item space. The long- and short-term vectors are linear in the item
vectors: ``long = decay * (sum_items W_i * v_i + T)``, where ``W_i`` sums the anchored
coefficients ``w * 2^((t - anchor) / h)`` of every event on item ``i`` and ``T`` is the
anchored sum of the user's text vectors (reviews, searches). So the state keeps the
*coefficients*, not the vectors: one long and one short weight per distinct item id (two
numpy rows that grow by doubling, with an id -> slot dict; slots follow the dict's insertion
order, so the dict alone also lists the ids) and, for text events only, two accumulators in
the text encoder's space. The vectors are composed when they are read
(:meth:`ProfileState.long_vector`), against whichever item space the caller ranks in: the
text-encoder vectors alone, or text blended with collaborative vectors that are retrained in
the background. A retrain publishes a new :class:`portrait.items.ItemIndex` and every profile
is valid in it at once, with no replay. Items missing from the space (not in the catalog yet,
or without a vector) contribute nothing there, and count as soon as a space has them. The
text accumulators are placed in the space's text part (``[:items.text_dim]``), the layout of
an item without a collaborative vector. The fold itself is still one multiply-add per event
and still a plain sum, so everything above about order independence holds unchanged.

Tags are the exception: they are read from the catalog when the event is folded (an item the
catalog did not know then adds no tag weight later), as they always were.

The fold that builds a state from events is :mod:`portrait.fold`; it never reads a clock and
takes every external input (the catalog's tags, a text's vector and keywords) as arguments,
so it is deterministic and free of I/O.
"""

from __future__ import annotations

import weakref

import numpy as np

from portrait.config import ProfileConfig
from portrait.errors import InvalidField, MixedTextSpaces
from portrait.items import ItemIndex

# Initial capacity of the per-item weight rows; they double when full.
_MIN_SLOTS = 4

# Compositions are cached from this many distinct items on: below it composing costs tens of
# microseconds against a ~0.5 ms catalog scoring, not worth 2 x dim float64 per user held.
_CACHE_FROM_ITEMS = 64

RecentItem = tuple[float, str, str, str]  # (occurred_at, event_id, item_id, event type)


class ProfileState:
    """One user's profile. Mutable accumulator owned by one writer; see :func:`~portrait.fold.fold`.

    Weights are stored anchored (see the module docstring); read them through
    :meth:`long_vector`, :meth:`short_vector` (composed in an item space),
    :meth:`tag_weights` and :meth:`keyword_weights`, which apply the decay to ``t_ref``.

    Attributes:
        item_slots: item id -> column of ``item_weights``, in insertion (= column) order.
        item_weights: ``(2, capacity)`` float64, anchored long (row 0) and short (row 1)
            weight per item; only the first ``len(item_slots)`` columns are in use.
        text_dim: width of the text vectors folded so far (None until the first one, unless
            given), which must be the ``text_dim`` of any item space the vectors are read in.
        text_model: the encoder (model id) whose vectors ``text_acc`` sums, set with it by
            the first text fold; only an item space of that encoder may read them
            (:meth:`composed` raises :class:`MixedTextSpaces` otherwise). None with text
            folded means unknown (a snapshot written before it was recorded): not to be
            trusted, re-fold from the log.
        text_acc: ``(2, text_dim)`` float64, anchored long and short sums of text vectors;
            None until a text event is folded (most users never write one).
    """

    __slots__ = (
        "user_id",
        "text_dim",
        "text_model",
        "anchor",
        "t_ref",
        "item_slots",
        "item_weights",
        "text_acc",
        "tags",
        "keywords",
        "counts",
        "recent",
        "excluded",
        "attributes",
        "last_seq",
        "event_count",
        "_composed",
    )

    def __init__(self, user_id: str, text_dim: int | None = None) -> None:
        """Start an empty profile.

        Args:
            user_id: the user whose events this state folds.
            text_dim: expected width of text vectors; when None, taken from the first one.
        """
        if text_dim is not None and text_dim < 1:
            raise InvalidField("text_dim", "must be positive")
        self.user_id = user_id
        self.text_dim = text_dim
        self.text_model: str | None = None
        self.anchor: float | None = None
        self.t_ref: float | None = None
        self.item_slots: dict[str, int] = {}
        self.item_weights = _EMPTY_WEIGHTS
        self.text_acc: np.ndarray | None = None
        self.tags: dict[str, float] = {}
        self.keywords: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.recent: list[RecentItem] = []  # newest last; at most config.recent_items
        self.excluded: set[str] = set()
        self.attributes: dict[str, tuple[float, str, str]] = {}  # key -> (time, event_id, value)
        self.last_seq = 0
        self.event_count = 0
        # The last composition: (weak reference to its item space, (2, dim) anchored vectors).
        # Dropped by every change of the state (see _changed).
        self._composed: tuple[weakref.ref[ItemIndex], np.ndarray] | None = None

    def copy(self) -> ProfileState:
        """An independent deep copy."""
        other = ProfileState(self.user_id, self.text_dim)
        other.text_model = self.text_model
        other.anchor, other.t_ref = self.anchor, self.t_ref
        other.item_slots = dict(self.item_slots)
        n = len(self.item_slots)
        other.item_weights = self.item_weights[:, :n].copy() if n else _EMPTY_WEIGHTS
        other.text_acc = None if self.text_acc is None else self.text_acc.copy()
        other.tags = dict(self.tags)
        other.keywords = dict(self.keywords)
        other.counts = dict(self.counts)
        other.recent = list(self.recent)
        other.excluded = set(self.excluded)
        other.attributes = dict(self.attributes)
        other.last_seq, other.event_count = self.last_seq, self.event_count
        return other

    def _changed(self) -> None:
        """Forget the cached composition; every mutation of the sums calls this."""
        self._composed = None

    def _slot(self, item_id: str) -> int:
        """The column of ``item_id`` in ``item_weights``, adding a zero one if new."""
        slot = self.item_slots.get(item_id)
        if slot is None:
            slot = len(self.item_slots)
            self.item_slots[item_id] = slot
            self._reserve(slot + 1)
        return slot

    def _reserve(self, n: int) -> None:
        """Make room for ``n`` item columns (doubling, so growth is amortised O(1))."""
        cap = self.item_weights.shape[1]
        if n <= cap:
            return
        grown = np.zeros((2, max(_MIN_SLOTS, 2 * cap, n)), dtype=np.float64)
        grown[:, :cap] = self.item_weights
        self.item_weights = grown

    # -- decayed views -------------------------------------------------------------------

    def _decay(self, half_life_s: float) -> float:
        if self.anchor is None or self.t_ref is None:
            return 0.0
        return float(2.0 ** (-(self.t_ref - self.anchor) / half_life_s))

    def composed(self, items: ItemIndex) -> np.ndarray:
        """The anchored long (row 0) and short (row 1) vectors in ``items``' space.

        ``sum_i W_i * items.matrix[row(i)]`` over the folded item ids that ``items`` holds,
        plus the text accumulators in the text part. Read-only, float64, ``(2, items.dim)``;
        cached (for profiles of ``_CACHE_FROM_ITEMS`` items or more, where composing costs)
        until the next change of the state or a call with another item space; the cache
        holds the space only by a weak reference.
        """
        cached = self._composed
        if cached is not None and cached[0]() is items:
            return cached[1]
        out = np.zeros((2, items.dim), dtype=np.float64)
        n = len(self.item_slots)
        if n:
            rows = items.rows_of(self.item_slots)  # slot order: the dict's insertion order
            weights = self.item_weights[:, :n]
            present = rows >= 0
            if not present.all():
                rows, weights = rows[present], weights[:, present]
            if rows.size:
                # The rows in float64 (the fold always summed in float64), then two
                # matrix-vector products: measured ~1.5x faster than one gemm with a two-row
                # left operand, and mixed float32/float64 operands skip BLAS altogether.
                block = items.vectors(rows).astype(np.float64)
                np.dot(weights[0], block, out=out[0])
                np.dot(weights[1], block, out=out[1])
        if self.text_acc is not None:
            if items.model_id != self.text_model:
                raise MixedTextSpaces(self.text_model, items.model_id,
                                      f"profile of {self.user_id!r} read in an item space")
            if self.text_acc.shape[1] != items.text_dim:
                raise InvalidField(
                    "items.text_dim",
                    f"the profile's text vectors have {self.text_acc.shape[1]} dimensions, "
                    f"the item space's text part {items.text_dim}",
                )
            out[:, : items.text_dim] += self.text_acc
        out.setflags(write=False)
        if n >= _CACHE_FROM_ITEMS:
            self._composed = (weakref.ref(items), out)
        return out

    def vectors(self, config: ProfileConfig, items: ItemIndex) -> tuple[np.ndarray, np.ndarray]:
        """The long- and short-term vectors at ``t_ref`` in ``items``' space (not normalised)."""
        both = self.composed(items)
        return (
            both[0] * self._decay(config.long_half_life_s),
            both[1] * self._decay(config.short_half_life_s),
        )

    def long_vector(self, config: ProfileConfig, items: ItemIndex) -> np.ndarray:
        """The long-term interest vector at ``t_ref`` in ``items``' space (not normalised)."""
        result: np.ndarray = self.composed(items)[0] * self._decay(config.long_half_life_s)
        return result

    def short_vector(self, config: ProfileConfig, items: ItemIndex) -> np.ndarray:
        """The short-term (recent session) vector at ``t_ref`` in ``items``' space."""
        result: np.ndarray = self.composed(items)[1] * self._decay(config.short_half_life_s)
        return result

    def item_weights_at(self, config: ProfileConfig) -> dict[str, tuple[float, float]]:
        """Decayed (long, short) weight per folded item id at ``t_ref``."""
        dl, ds = self._decay(config.long_half_life_s), self._decay(config.short_half_life_s)
        w = self.item_weights
        return {i: (float(w[0, s]) * dl, float(w[1, s]) * ds) for i, s in self.item_slots.items()}

    def long_weights_of(self, config: ProfileConfig, item_ids: list[str]) -> np.ndarray:
        """Decayed long-term weight of each of ``item_ids`` at ``t_ref`` (0 for ids not folded);
        what :meth:`item_weights_at` gives for a few ids, without a dict over every item."""
        slots = self.item_slots
        cols = np.fromiter((slots.get(i, -1) for i in item_ids), np.int64, len(item_ids))
        found = cols >= 0
        out = np.zeros(len(item_ids))
        out[found] = self.item_weights[0, cols[found]] * self._decay(config.long_half_life_s)
        return out

    def tag_weights(self, config: ProfileConfig) -> dict[str, float]:
        """Decayed interest weight per tag at ``t_ref``; negative means disliked."""
        d = self._decay(config.tag_half_life_s)
        return {k: v * d for k, v in self.tags.items()}

    def keyword_weights(self, config: ProfileConfig) -> dict[str, float]:
        """Decayed weight per keyword drawn from the user's own text, at ``t_ref``."""
        d = self._decay(config.tag_half_life_s)
        return {k: v * d for k, v in self.keywords.items()}

    def attribute_values(self) -> dict[str, str]:
        """The basic attributes in force (latest by event time); cleared ones omitted."""
        return {k: v for k, (_, _, v) in sorted(self.attributes.items()) if v}


# Shared by every state without item weights (never written: _reserve replaces it first).
_EMPTY_WEIGHTS = np.zeros((2, 0), dtype=np.float64)
_EMPTY_WEIGHTS.setflags(write=False)
