"""The fold: a user's recorded events applied to a :class:`~portrait.profile.ProfileState`.

Pure and order-independent (see :mod:`portrait.profile` for the anchored sums that make it
so): it never reads a clock and takes every external input (the catalog's tags, a text's
vector and keywords) as arguments, so it is deterministic and free of I/O. :func:`replay` is
the same fold from a fresh state or a snapshot, with the audit's cut-offs.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence
from itertools import chain, pairwise
from sys import intern

import numpy as np

from portrait.config import ProfileConfig
from portrait.errors import InvalidField, MissingFeatures, MixedTextSpaces
from portrait.events import (
    AttributesSet,
    Event,
    ItemEvent,
    RecordedEvent,
    ReviewWritten,
    SearchPerformed,
)
from portrait.ports import ItemLookup, TextFeatures
from portrait.profile import ProfileState

# Move the anchor once the newest event is this many (shortest) half-lives past it:
# 2**256 is far from float64's range even after multiplying by weights and vector entries.
REBASE_AFTER_HALF_LIVES = 256.0

# Up to this many weighted item events are accumulated one by one with Python floats; more go
# through numpy (array set-up costs more than a few scalar multiply-adds).
_FEW = 8

_TEXT_TYPES = frozenset({ReviewWritten.TYPE, SearchPerformed.TYPE})


def _strongest(weights: dict[str, float], keep: int) -> dict[str, float]:
    """The ``keep`` largest weights (ties by key, so the choice is deterministic). All share
    the profile's anchor, so stored values compare as decayed ones would."""
    top = heapq.nlargest(keep, weights.items(), key=lambda kv: (kv[1], kv[0]))
    return dict(top)


def _check_one_space(state: ProfileState, features: Sequence[TextFeatures]) -> None:
    """Every feature from one encoder, and the state's own if it has text already: a sum of
    vectors from two encoders' spaces would be meaningless, so it is refused whole."""
    models = {f.model_id for f in features}
    if len(models) > 1:
        first, *rest = sorted(models)
        raise MixedTextSpaces(first, rest[0], "text features of one fold")
    if state.text_acc is not None and models and (got := models.pop()) != state.text_model:
        raise MixedTextSpaces(state.text_model, got, f"profile of {state.user_id!r}")


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
    earlier ones, raises before anything changes; so do features of another encoder than the
    state's text (or of two encoders in one call): :class:`MixedTextSpaces`. ``items`` is read
    for tags only: item weights are kept per item id, whatever the catalog holds (see the
    module docstring).
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
        _check_one_space(state, [texts[e.event_id] for e in text_evs])
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
            state.text_model = texts[weighted_texts[0][0].event_id].model_id
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
