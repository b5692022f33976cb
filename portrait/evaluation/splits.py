"""Evaluation splits: leave-last-out per user and a global temporal split.

Pure: numpy and the standard library only, no I/O.

Definitions (they are the contract the runner and the report rely on)
----------------------------------------------------------------------
* **User stream.** A user's events ordered by ``(occurred_at, event_id)``. Timestamps tie
  often (MovieLens users rate in bursts within one second; Amazon has day resolution), and the
  tie is broken by ``event_id`` compared as a string. This is the same rule as the dataset
  order ``(occurred_at, user_id, event_id)`` restricted to one user, so it is total and
  reproducible; it is not claimed to be the true order of tied events.
* **Interaction.** An item event whose type is in ``target_types`` (default: every item event
  except ``dismiss``, which is negative feedback). Searches, attribute changes and dismissals
  are folded into profiles like any other event but are never targets.
* **Targets.** Every interaction counts as a target whatever its rating, as in most published
  leave-last-out setups (SASRec, BERT4Rec, ...): the task is "which item does the user engage
  with next", and a user rates what they chose to watch. ``min_target_rating`` restricts
  targets to ratings at or above it for a "liked next" variant.
* **New items only.** Targets are items the user had not interacted with before the test
  point: leave-last-out holds out the last *new* item (for MovieLens, one rating per
  user-item, this is simply the last rating). Every system excludes the items in the visible
  history, so a target is always rankable when it is in the catalog.

Leave-last-out: per user with at least ``min_items`` distinct interacted items, the test case
is the first interaction with the last new item, the validation case the first interaction
with the one before it. The profile of a case sees exactly the user's stream *before* that
event (``cutoff``). Users with fewer items are not evaluated but their events still train the
global models (popularity, co-occurrence).

Temporal: one global cut time ``T`` at a quantile of all interaction times. The profile sees
the user's events with ``occurred_at <= T``; targets are the new items the user interacts with
after ``T``. Validation repeats the rule inside the training period (cut at the same quantile of
the events up to ``T``).

Training data for global models (``Split.train_events``): for leave-last-out, every user's
stream before their own case (events of users not evaluated: all of them); for temporal, every
event at or before ``T``. Leave-last-out therefore lets other users' *later* events shape
co-occurrence models, the usual convention in leave-last-out papers; the temporal split is the
strictly time-respecting alternative. Popularity is always time-respecting (see the runner).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent, ItemRated, ReviewWritten

DEFAULT_TARGET_TYPES = POSITIVE_ITEM_TYPES
LAST = "\U0010ffff"  # sorts after every event id: "every event at this time"

Key = tuple[float, str]


def stream_key(event: Event) -> Key:
    """The order of events within one user's stream: ``(occurred_at, event_id)``."""
    return (event.occurred_at, event.event_id)


@dataclass(frozen=True)
class Case:
    """One test point: a user, what their profile may see, and the items to find.

    Attributes:
        user_id: whose case it is.
        cutoff: the profile sees ``stream[:cutoff]`` of the user's stream, nothing else.
        key: every folded event must sort strictly before it (``stream_key(e) < key``); the
            runner asserts this. For leave-last-out it is the held-out event's key; for the
            temporal split ``(T, LAST)``.
        horizon: global models that change over time (popularity) may count training events
            with ``occurred_at <= horizon`` (leave-last-out: strictly before the held-out
            event's time; temporal: ``T``).
        targets: item ids to rank (new to the user), in the order the user reached them.
    """

    user_id: str
    cutoff: int
    key: Key
    horizon: float
    targets: tuple[str, ...]

    @property
    def time(self) -> float:
        return self.key[0]


@dataclass(frozen=True)
class Split:
    """The cases of one phase (validation or test) and what global models may learn from."""

    name: str
    phase: str
    streams: Mapping[str, tuple[Event, ...]]
    cases: tuple[Case, ...]
    train_events: tuple[Event, ...]

    def history_items(self, case: Case) -> list[str]:
        """Distinct item ids of the interactions the case's profile sees, first-seen order."""
        seen: dict[str, None] = {}
        for ev in self.streams[case.user_id][: case.cutoff]:
            if isinstance(ev, ItemEvent):
                seen.setdefault(ev.item_id, None)
        return list(seen)

    def stats(self) -> dict[str, object]:
        n_targets = [len(c.targets) for c in self.cases]
        hist = [len(self.history_items(c)) for c in self.cases]
        return {
            "split": self.name,
            "phase": self.phase,
            "cases": len(self.cases),
            "users_in_data": len(self.streams),
            "targets": int(sum(n_targets)),
            "train_events": len(self.train_events),
            "median_history_items": float(np.median(hist)) if hist else 0.0,
        }


def user_streams(events: Iterable[Event]) -> dict[str, tuple[Event, ...]]:
    """Each user's events in stream order (see :func:`stream_key`)."""
    by_user: dict[str, list[Event]] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, []).append(ev)
    return {u: tuple(sorted(evs, key=stream_key)) for u, evs in by_user.items()}


def _rating(ev: Event) -> float | None:
    if isinstance(ev, ItemRated):
        return ev.rating
    if isinstance(ev, ReviewWritten):
        return ev.rating
    return None


def _is_target(ev: Event, target_types: Collection[str], min_rating: float | None) -> bool:
    if not isinstance(ev, ItemEvent) or ev.TYPE not in target_types:
        return False
    if min_rating is not None:
        r = _rating(ev)
        return r is not None and r >= min_rating
    return True


def _first_interactions(
    stream: Sequence[Event], target_types: Collection[str]
) -> list[tuple[int, str]]:
    """``(index in stream, item_id)`` of the first interaction with each distinct item."""
    seen: set[str] = set()
    out = []
    for i, ev in enumerate(stream):
        if isinstance(ev, ItemEvent) and ev.TYPE in target_types and ev.item_id not in seen:
            seen.add(ev.item_id)
            out.append((i, ev.item_id))
    return out


def _before(t: float) -> float:
    return float(np.nextafter(t, -np.inf))


def leave_last_out(
    events: Iterable[Event],
    *,
    min_items: int = 3,
    target_types: Collection[str] = DEFAULT_TARGET_TYPES,
    min_target_rating: float | None = None,
    name: str = "leave-last-out",
) -> tuple[Split, Split]:
    """``(validation, test)`` leave-last-out splits; see the module docstring.

    With ``min_target_rating``, the held-out items are the last two new items whose first
    interaction has a rating at or above it (events after the validation item still feed the
    test profile).
    """
    streams = user_streams(events)
    val_cases: list[Case] = []
    test_cases: list[Case] = []
    val_train: list[Event] = []
    test_train: list[Event] = []
    for user in sorted(streams):
        stream = streams[user]
        firsts = _first_interactions(stream, target_types)
        eligible = [
            (i, item)
            for i, item in firsts
            if _is_target(stream[i], target_types, min_target_rating)
        ]
        if len(firsts) < min_items or len(eligible) < 2:
            val_train.extend(stream)
            test_train.extend(stream)
            continue
        (vi, v_item), (ti, t_item) = eligible[-2], eligible[-1]
        v_ev, t_ev = stream[vi], stream[ti]
        val_cases.append(Case(user, vi, stream_key(v_ev), _before(v_ev.occurred_at), (v_item,)))
        test_cases.append(Case(user, ti, stream_key(t_ev), _before(t_ev.occurred_at), (t_item,)))
        val_train.extend(stream[:vi])
        test_train.extend(stream[:ti])
    return (
        Split(name, "validation", streams, tuple(val_cases), _dataset_order(val_train)),
        Split(name, "test", streams, tuple(test_cases), _dataset_order(test_train)),
    )


def _dataset_order(events: list[Event]) -> tuple[Event, ...]:
    return tuple(sorted(events, key=lambda e: (e.occurred_at, e.user_id, e.event_id)))


def _temporal_phase(
    streams: Mapping[str, tuple[Event, ...]],
    cut: float,
    phase: str,
    name: str,
    target_types: Collection[str],
    min_target_rating: float | None,
    min_train_items: int,
    end: float | None,
) -> Split:
    cases: list[Case] = []
    train: list[Event] = []
    for user in sorted(streams):
        stream = streams[user]
        cutoff = 0
        while cutoff < len(stream) and stream[cutoff].occurred_at <= cut:
            cutoff += 1
        train.extend(stream[:cutoff])
        history = {
            ev.item_id
            for ev in stream[:cutoff]
            if isinstance(ev, ItemEvent) and ev.TYPE in target_types
        }
        if len(history) < min_train_items:
            continue
        targets: dict[str, None] = {}
        for ev in stream[cutoff:]:
            if end is not None and ev.occurred_at > end:
                break
            if (
                isinstance(ev, ItemEvent)
                and _is_target(ev, target_types, min_target_rating)
                and ev.item_id not in history
            ):
                targets.setdefault(ev.item_id, None)
        if targets:
            cases.append(Case(user, cutoff, (cut, LAST), cut, tuple(targets)))
    return Split(name, phase, streams, tuple(cases), _dataset_order(train))


def temporal_split(
    events: Iterable[Event],
    *,
    test_quantile: float = 0.8,
    validation_quantile: float = 0.8,
    target_types: Collection[str] = DEFAULT_TARGET_TYPES,
    min_target_rating: float | None = None,
    min_train_items: int = 1,
    name: str = "temporal",
) -> tuple[Split, Split]:
    """``(validation, test)`` global temporal splits; see the module docstring.

    ``T`` is the ``test_quantile`` of interaction times; the validation cut is the
    ``validation_quantile`` of the interaction times up to ``T``, and validation targets are
    limited to the period up to ``T``.
    """
    if not 0.0 < test_quantile < 1.0 or not 0.0 < validation_quantile < 1.0:
        raise ValueError("quantiles must be strictly between 0 and 1")
    events = list(events)
    streams = user_streams(events)
    times = np.asarray(
        [e.occurred_at for e in events if isinstance(e, ItemEvent) and e.TYPE in target_types],
        dtype=np.float64,
    )
    if times.size == 0:
        raise ValueError("no interactions to split")
    cut = float(np.quantile(times, test_quantile, method="lower"))
    val_cut = float(np.quantile(times[times <= cut], validation_quantile, method="lower"))
    args = (target_types, min_target_rating, min_train_items)
    return (
        _temporal_phase(streams, val_cut, "validation", name, *args, end=cut),
        _temporal_phase(streams, cut, "test", name, *args, end=None),
    )
