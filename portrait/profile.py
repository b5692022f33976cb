"""The profile: state derived from a user's events by a pure, order-independent fold.

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

The fold never reads a clock and takes every external input (the catalog's tags, a text's
vector and keywords) as arguments, so it is deterministic and free of I/O.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, pairwise
from sys import intern

import numpy as np

from portrait.config import ProfileConfig
from portrait.errors import InvalidField, MissingFeatures
from portrait.events import (
    AttributesSet,
    Event,
    ItemEvent,
    RecordedEvent,
    ReviewWritten,
    SearchPerformed,
)
from portrait.items import ItemIndex
from portrait.ports import ItemLookup, TextFeatures

# Move the anchor once the newest event is this many (shortest) half-lives past it:
# 2**256 is far from float64's range even after multiplying by weights and vector entries.
REBASE_AFTER_HALF_LIVES = 256.0

# Up to this many weighted item events are accumulated one by one with Python floats; more go
# through numpy (array set-up costs more than a few scalar multiply-adds).
_FEW = 8

# Initial capacity of the per-item weight rows; they double when full.
_MIN_SLOTS = 4

# Compositions are cached from this many distinct items on: below it composing costs tens of
# microseconds against a ~0.5 ms catalog scoring, not worth 2 x dim float64 per user held.
_CACHE_FROM_ITEMS = 64

_TEXT_TYPES = frozenset({ReviewWritten.TYPE, SearchPerformed.TYPE})

RecentItem = tuple[float, str, str, str]  # (occurred_at, event_id, item_id, event type)


class ProfileState:
    """One user's profile. Mutable accumulator owned by one writer; see :func:`fold`.

    Weights are stored anchored (see the module docstring); read them through
    :meth:`long_vector`, :meth:`short_vector` (composed in an item space),
    :meth:`tag_weights` and :meth:`keyword_weights`, which apply the decay to ``t_ref``.

    Attributes:
        item_slots: item id -> column of ``item_weights``, in insertion (= column) order.
        item_weights: ``(2, capacity)`` float64, anchored long (row 0) and short (row 1)
            weight per item; only the first ``len(item_slots)`` columns are in use.
        text_dim: width of the text vectors folded so far (None until the first one, unless
            given), which must be the ``text_dim`` of any item space the vectors are read in.
        text_acc: ``(2, text_dim)`` float64, anchored long and short sums of text vectors;
            None until a text event is folded (most users never write one).
    """

    __slots__ = (
        "user_id",
        "text_dim",
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
                block = items.matrix[rows].astype(np.float64)
                np.dot(weights[0], block, out=out[0])
                np.dot(weights[1], block, out=out[1])
        if self.text_acc is not None:
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


def _strongest(weights: dict[str, float], keep: int) -> dict[str, float]:
    """The ``keep`` largest weights (ties by key, so the choice is deterministic). All share
    the profile's anchor, so stored values compare as decayed ones would."""
    top = heapq.nlargest(keep, weights.items(), key=lambda kv: (kv[1], kv[0]))
    return dict(top)


def _rebase(state: ProfileState, new_anchor: float, config: ProfileConfig) -> None:
    """Move the anchor forward to ``new_anchor``, rescaling every anchored sum."""
    assert state.anchor is not None
    dt = new_anchor - state.anchor
    scale = np.array(
        [[2.0 ** (-dt / config.long_half_life_s)], [2.0 ** (-dt / config.short_half_life_s)]]
    )
    n = len(state.item_slots)
    if n:
        state.item_weights[:, :n] *= scale
    if state.text_acc is not None:
        state.text_acc *= scale
    tag_scale = 2.0 ** (-dt / config.tag_half_life_s)
    state.tags = {k: v * tag_scale for k, v in state.tags.items()}
    state.keywords = {k: v * tag_scale for k, v in state.keywords.items()}
    state.anchor = new_anchor
    state._changed()


def fold(
    state: ProfileState,
    events: Sequence[RecordedEvent],
    config: ProfileConfig,
    items: ItemLookup,
    texts: Mapping[str, TextFeatures] | None = None,
) -> ProfileState:
    """Apply ``events`` (in seq order) to ``state`` in place and return it.

    Events at or below ``state.last_seq`` are skipped (already folded), so a snapshot plus an
    overlapping tail is safe. ``texts`` maps a text event's event_id to its encoded features;
    a review or search without them, or with a vector of another width than the state's
    earlier ones, raises before anything changes. ``items`` is read for tags only: item
    weights are kept per item id, whatever the catalog holds (see the module docstring).
    """
    texts = texts or {}
    base = state.last_seq
    todo = [rec for rec in events if rec.seq > base]
    seqs = [rec.seq for rec in todo]
    if any(b <= a for a, b in pairwise(seqs)):
        raise InvalidField("seq", "events must be in strictly increasing seq order")
    if not todo:
        return state
    evs = [rec.event for rec in todo]
    if any(e.user_id != state.user_id for e in evs):
        other = next(e.user_id for e in evs if e.user_id != state.user_id)
        raise InvalidField("user_id", f"event for {other!r} folded into {state.user_id!r}")
    text_evs = [e for e in evs if e.TYPE in _TEXT_TYPES]
    text_weights = config.text_weights
    weighted_texts: list[tuple[Event, float]] = []
    if text_evs:
        for e in text_evs:
            if e.event_id not in texts:
                raise MissingFeatures(f"no text features for {e.TYPE} event {e.event_id!r}")
        weighted_texts = [
            (e, tw) for e in text_evs if (tw := text_weights.get(e.TYPE, 0.0)) != 0.0
        ]
        widths = {np.shape(texts[e.event_id].vector) for e, _ in weighted_texts}
        if state.text_dim is not None:
            widths.add((state.text_dim,))
        if len(widths) > 1 or any(len(w) != 1 for w in widths):
            raise InvalidField(
                "texts", f"text vectors must all have one width, got shapes {sorted(widths)}"
            )

    t_max = max(e.occurred_at for e in evs)
    if state.t_ref is not None:
        t_max = max(t_max, state.t_ref)
    if state.anchor is None:
        state.anchor = t_max
    elif (t_max - state.anchor) / min(
        config.long_half_life_s, config.short_half_life_s, config.tag_half_life_s
    ) > REBASE_AFTER_HALF_LIVES:
        _rebase(state, t_max, config)
    anchor = state.anchor
    state._changed()

    # Classification by comprehensions (the hot path: ~4x faster than one explicit loop);
    # batches' decay computations are vectorised below.
    counts = state.counts
    for e in evs:
        counts[e.TYPE] = counts.get(e.TYPE, 0) + 1
    item_evs = [e for e in evs if isinstance(e, ItemEvent)]
    weights = config.event_weights
    rating_w = weights.get("rating", 0.0) / config.rating_scale
    center = config.rating_center
    item_w = [
        rating_w * (e.rating - center)  # type: ignore[attr-defined]
        if e.TYPE == "rating" or (e.TYPE == "review" and e.rating is not None)  # type: ignore[attr-defined]
        else weights.get(e.TYPE, 0.0)
        for e in item_evs
    ]
    # Interned: the profile holds item ids for as long as the user is active (weights,
    # exclusions, recent items), and one shared string per item across all users of a process
    # costs a dict entry per user instead of a ~55-byte string each.
    item_ids = [intern(e.item_id) for e in item_evs]
    # Every item id gets its weights, in the catalog or not (a later item space may have it).
    keep = [i for i, w in enumerate(item_w) if w != 0.0]
    exclude_types = config.exclude_types
    state.excluded.update(item_ids[i] for i, e in enumerate(item_evs) if e.TYPE in exclude_types)
    long_h, short_h, tag_h = (
        config.long_half_life_s, config.short_half_life_s, config.tag_half_life_s
    )
    row_of, tags_of, tags = items.row, items.tags, state.tags

    if len(keep) > _FEW:
        slots = state.item_slots
        # setdefault gives a new id the next free column (len is read before the insert).
        slot_arr = np.fromiter(
            (slots.setdefault(item_ids[i], len(slots)) for i in keep), np.int64, len(keep)
        )
        n = len(slots)
        state._reserve(n)
        w_arr = np.fromiter((item_w[i] for i in keep), dtype=np.float64, count=len(keep))
        times = (item_evs[i].occurred_at for i in keep)
        dt_arr = np.fromiter(times, np.float64, len(keep)) - anchor
        iw = state.item_weights
        iw[0, :n] += np.bincount(slot_arr, weights=w_arr * np.exp2(dt_arr / long_h), minlength=n)
        iw[1, :n] += np.bincount(slot_arr, weights=w_arr * np.exp2(dt_arr / short_h), minlength=n)
        # Tags: sum coefficients per distinct item first, then one dict update per tag.
        per_slot = np.bincount(slot_arr, weights=w_arr * np.exp2(dt_arr / tag_h), minlength=n)
        for item_id in dict.fromkeys(item_ids[i] for i in keep):
            row = row_of(item_id)
            if row is not None:
                c = float(per_slot[slots[item_id]])
                for tag in tags_of(row):
                    tags[tag] = tags.get(tag, 0.0) + c
    elif keep:
        # A live ingest folds one or two events: scalar coefficients (Python floats, exact
        # float64) and two array stores per event cost a fraction of the array set-up above.
        for i in keep:
            e, w = item_evs[i], item_w[i]
            dt = e.occurred_at - anchor
            slot = state._slot(item_ids[i])
            iw = state.item_weights
            iw[0, slot] += w * 2.0 ** (dt / long_h)
            iw[1, slot] += w * 2.0 ** (dt / short_h)
            row = row_of(item_ids[i])
            if row is not None:
                c = w * 2.0 ** (dt / tag_h)
                for tag in tags_of(row):
                    tags[tag] = tags.get(tag, 0.0) + c

    if weighted_texts:
        acc = state.text_acc
        if acc is None:
            width = int(np.shape(texts[weighted_texts[0][0].event_id].vector)[0])
            state.text_dim = width
            acc = state.text_acc = np.zeros((2, width), dtype=np.float64)
        keywords = state.keywords
        if len(weighted_texts) > _FEW:
            tv = np.asarray([texts[e.event_id].vector for e, _ in weighted_texts], np.float64)
            tw_arr = np.asarray([tw for _, tw in weighted_texts])
            dt_arr = np.asarray([e.occurred_at for e, _ in weighted_texts]) - anchor
            acc += (tw_arr * np.exp2(np.stack([dt_arr / long_h, dt_arr / short_h]))) @ tv
            kw_coef = (tw_arr * np.exp2(dt_arr / tag_h)).tolist()
        else:
            # The live case (one search or review): two axpys beat building arrays. The
            # coefficients are np.float64 so that a float32 vector is promoted, not the
            # coefficient demoted (NEP 50), which would lose precision or overflow.
            kw_coef = []
            for e, tw in weighted_texts:
                dt = e.occurred_at - anchor
                vector = texts[e.event_id].vector
                acc[0] += np.float64(tw * 2.0 ** (dt / long_h)) * vector
                acc[1] += np.float64(tw * 2.0 ** (dt / short_h)) * vector
                kw_coef.append(tw * 2.0 ** (dt / tag_h))
        cap = config.max_keywords
        for (e, _), c in zip(weighted_texts, kw_coef, strict=True):
            for word, score in texts[e.event_id].keywords:
                keywords[word] = keywords.get(word, 0.0) + c * score
            # Checked after every event, not every batch: the log's order alone decides
            # what is dropped, so a live profile still equals a replay of its log.
            if len(keywords) > 2 * cap:
                keywords = state.keywords = _strongest(keywords, cap)

    for e in evs:
        if isinstance(e, AttributesSet):
            for key, value in e.attributes.items():
                current = state.attributes.get(key)
                if current is None or (e.occurred_at, e.event_id) > current[:2]:
                    state.attributes[key] = (e.occurred_at, e.event_id, value)

    if config.recent_items and item_evs:
        # Ordered by (time, event_id), never by arrival, so replay order cannot change it.
        new = sorted(
            (e.occurred_at, e.event_id, item_id, e.TYPE)
            for e, item_id in zip(item_evs, item_ids, strict=True)
        )
        if not state.recent or new[0] > state.recent[-1]:  # the live case: all newer
            state.recent = (state.recent + new)[-config.recent_items :]
        else:
            state.recent = heapq.nlargest(config.recent_items, chain(state.recent, new))[::-1]
    state.t_ref = t_max
    state.last_seq = seqs[-1]
    state.event_count += len(todo)
    return state


def replay(
    events: Iterable[RecordedEvent],
    config: ProfileConfig,
    items: ItemLookup,
    texts: Mapping[str, TextFeatures] | None = None,
    *,
    user_id: str,
    until_seq: int | None = None,
    until_time: float | None = None,
    snapshot: ProfileState | None = None,
) -> ProfileState:
    """The profile of ``user_id`` after ``events``: a fresh state, never a shared one.

    ``until_seq`` stops after that seq; ``until_time`` keeps only events that *occurred* at or
    before it (the profile as the world stood then, late-arriving events included once
    recorded). ``snapshot`` is used as the starting point when it cannot contain anything
    past the cut-off; otherwise it is ignored and replay starts from empty.
    """
    if until_seq is not None and until_seq < 0:
        raise InvalidField("until_seq", "must be non-negative")
    state: ProfileState | None = None
    if snapshot is not None and snapshot.user_id == user_id:
        seq_ok = until_seq is None or snapshot.last_seq <= until_seq
        time_ok = until_time is None or snapshot.t_ref is None or snapshot.t_ref <= until_time
        if seq_ok and time_ok:
            state = snapshot.copy()
    if state is None:
        state = ProfileState(user_id)
    selected = [
        rec
        for rec in events
        if (until_seq is None or rec.seq <= until_seq)
        and (until_time is None or rec.event.occurred_at <= until_time)
    ]
    return fold(state, selected, config, items, texts)
