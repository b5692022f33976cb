"""What a group of append requests does to a log: pure, shared by every EventLog adapter.

An adapter looks up the already-recorded events with the requests' event_ids and the current
versions of their users, asks :func:`plan_appends` what to write, stores
:attr:`AppendPlan.rows` (assigning positions in row order), then reads the per-request
outcomes from :meth:`AppendPlan.results`. Keeping the decisions here means the in-memory
and Postgres logs cannot drift apart on duplicates, conflicts or version checks.

Event ids are unique per user, not across users: the key of an event is ``(user_id,
event_id)`` (:data:`EventKey`), so one client cannot squat on or probe another user's ids.

Requests apply in order, as if appended one after another: a later request sees the seqs and
event_ids that earlier requests of the same call write. A request that fails (its version is
stale, an event_id conflicts) writes nothing and does not affect the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from portrait.errors import PortraitError, VersionConflict
from portrait.events import Event
from portrait.ports import AppendResult
from storage.validation import PreparedBatch, PreparedEvent, check_recorded

EventKey = tuple[str, str]  # (user_id, event_id)


@dataclass(frozen=True, slots=True)
class Recorded:
    """An event the log already holds."""

    event: Event
    seq: int
    position: int


@dataclass(slots=True)
class NewRow:
    """An event to write. ``position`` is set by the adapter once the row is stored."""

    user_id: str
    seq: int
    prepared: PreparedEvent
    position: int = 0


@dataclass(slots=True)
class _Accepted:
    batch: PreparedBatch
    # Per distinct event of the batch: where it lives, and whether it was there before.
    targets: list[tuple[Recorded | NewRow, bool]] = field(default_factory=list)


@dataclass(slots=True)
class AppendPlan:
    """The rows to write, in write order, and what each request gets back."""

    rows: list[NewRow]
    outcomes: list[_Accepted | PortraitError]

    def results(self) -> list[list[AppendResult] | PortraitError]:
        """Per request: its results in input order, or its error. Call after storing rows."""
        out: list[list[AppendResult] | PortraitError] = []
        for outcome in self.outcomes:
            if isinstance(outcome, PortraitError):
                out.append(outcome)
                continue
            unique = [
                AppendResult(p.event.event_id, target.seq, target.position, duplicate)
                for p, (target, duplicate) in zip(
                    outcome.batch.unique, outcome.targets, strict=True
                )
            ]
            out.append(outcome.batch.results(unique))
        return out


def event_keys(batches: Iterable[PreparedBatch | PortraitError]) -> list[EventKey]:
    """Every distinct ``(user_id, event_id)`` of the prepared batches."""
    return list(
        dict.fromkeys(
            (b.user_id, p.event.event_id)
            for b in batches if isinstance(b, PreparedBatch) for p in b.unique
        )
    )


def users_with_new_events(
    batches: Iterable[PreparedBatch | PortraitError], recorded: Mapping[EventKey, Recorded]
) -> list[str]:
    """Users whose current version the plan needs: those with an event not yet recorded."""
    return list(
        dict.fromkeys(
            b.user_id
            for b in batches
            if isinstance(b, PreparedBatch)
            and any((b.user_id, p.event.event_id) not in recorded for p in b.unique)
        )
    )


def plan_appends(
    batches: Sequence[PreparedBatch | PortraitError],
    recorded: Mapping[EventKey, Recorded],
    versions: Mapping[str, int],
) -> AppendPlan:
    """Decide each request's fate against the log's state.

    Args:
        batches: prepared requests, in order; an error stands for a request that failed
            validation and is passed through.
        recorded: the recorded events among the batches' keys, by ``(user_id, event_id)``.
        versions: current version of (at least) every user in
            :func:`users_with_new_events`; a user not present is at version 0.
    """
    rows: list[NewRow] = []
    outcomes: list[_Accepted | PortraitError] = []
    current = dict(versions)
    planned: dict[EventKey, NewRow] = {}  # keys written by earlier requests of this call
    for batch in batches:
        if isinstance(batch, PortraitError):
            outcomes.append(batch)
            continue
        try:
            outcomes.append(_plan_one(batch, recorded, planned, current, rows))
        except PortraitError as exc:
            outcomes.append(exc)
    return AppendPlan(rows, outcomes)


def _plan_one(
    batch: PreparedBatch,
    recorded: Mapping[EventKey, Recorded],
    planned: dict[EventKey, NewRow],
    current: dict[str, int],
    rows: list[NewRow],
) -> _Accepted:
    """One request's outcome; adds its rows only if it succeeds (all or nothing)."""
    targets: list[Recorded | NewRow | None] = []
    for prepared in batch.unique:
        key = (batch.user_id, prepared.event.event_id)
        previous = recorded.get(key) or planned.get(key)
        if previous is not None:
            earlier = previous.event if isinstance(previous, Recorded) else previous.prepared.event
            check_recorded(prepared.event, earlier)
        targets.append(previous)
    duplicate = [target is not None for target in targets]
    new = [index for index, target in enumerate(targets) if target is None]
    if new:
        version = current.get(batch.user_id, 0)
        expected = batch.expected_version
        if expected is not None and expected != version:
            raise VersionConflict(batch.user_id, expected, version)
        for offset, index in enumerate(new, start=1):
            row = NewRow(batch.user_id, version + offset, batch.unique[index])
            targets[index] = row
            planned[(row.user_id, row.prepared.event.event_id)] = row
            rows.append(row)
        current[batch.user_id] = version + len(new)
    accepted = _Accepted(batch)
    for target, was_there in zip(targets, duplicate, strict=True):
        assert target is not None  # every new event got a row above
        accepted.targets.append((target, was_there))
    return accepted


__all__ = [
    "AppendPlan",
    "NewRow",
    "Recorded",
    "EventKey",
    "event_keys",
    "plan_appends",
    "users_with_new_events",
]
