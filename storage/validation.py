"""Argument checks and batch preparation shared by every :class:`~portrait.ports.EventLog`.

Both adapters run these before any I/O, so that a bad call fails the same way (same error,
same field name) whatever the backend, and so that nothing is written for a batch that holds
one bad event.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from portrait.codec import MAX_PAYLOAD_BYTES, encode
from portrait.errors import EventIdConflict, InvalidField, PayloadTooLarge, PortraitError
from portrait.events import Event
from portrait.ports import AppendRequest, AppendResult, Snapshot


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """One distinct event of a batch, validated and encoded."""

    event: Event
    payload: bytes


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A validated batch: its distinct events, and where each input event maps.

    Attributes:
        user_id: the stream appended to.
        expected_version: the caller's expected version, if any.
        unique: the first occurrence of each event_id, in input order.
        slots: for each input event, the index in ``unique`` of its event_id.
        repeats: indices of input events that repeat an earlier event of the batch.
    """

    user_id: str
    expected_version: int | None
    unique: list[PreparedEvent]
    slots: list[int]
    repeats: frozenset[int]

    def results(self, unique_results: Sequence[AppendResult]) -> list[AppendResult]:
        """Per-input results from per-distinct-event results; repeats are duplicates."""
        out: list[AppendResult] = []
        for index, slot in enumerate(self.slots):
            result = unique_results[slot]
            if index in self.repeats and not result.duplicate:
                result = AppendResult(result.event_id, result.seq, result.position, True)
            out.append(result)
        return out


def check_count(name: str, value: object, *, optional: bool = False) -> None:
    """Raise InvalidField(name) unless ``value`` is an int >= 0 (or None when optional)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidField(name, "must be a non-negative integer")


def check_time(name: str, value: object) -> None:
    """Raise InvalidField(name) unless ``value`` is None or a number of seconds (not NaN)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise InvalidField(name, "must be a number of Unix seconds")


def check_read(
    after_seq: object, until_seq: object, until_time: object, limit: object
) -> None:
    """Check the filters of :meth:`EventLog.read`."""
    check_count("after_seq", after_seq)
    check_count("until_seq", until_seq, optional=True)
    check_time("until_time", until_time)
    check_count("limit", limit, optional=True)


def prepare_batch(
    user_id: str,
    events: Sequence[Event],
    expected_version: int | None,
    *,
    payload_limit: int = MAX_PAYLOAD_BYTES,
    payloads: Sequence[bytes] | None = None,
) -> PreparedBatch:
    """Validate and encode an append's arguments (one user's batch).

    Raises:
        InvalidField: a non-event, an event of another user (``events[i].user_id``), or a bad
            ``expected_version``.
        PayloadTooLarge: ``events[i]`` encodes to more than the codec's limit.
        EventIdConflict: the batch repeats an event_id with different content.
    """
    if not isinstance(user_id, str) or not user_id:
        raise InvalidField("user_id", "must be a non-empty string")
    if payloads is not None and len(payloads) != len(events):
        raise InvalidField("payloads", "must hold one payload per event")
    check_count("expected_version", expected_version, optional=True)
    unique: list[PreparedEvent] = []
    slots: list[int] = []
    repeats: set[int] = set()
    first_slot: dict[str, int] = {}
    for index, event in enumerate(events):
        if not isinstance(event, Event):
            raise InvalidField(f"events[{index}]", f"must be an Event, got {type(event).__name__}")
        if event.user_id != user_id:
            raise InvalidField(
                f"events[{index}].user_id", f"must be the stream's user_id {user_id!r}"
            )
        slot = first_slot.get(event.event_id)
        if slot is not None:
            # A client retrying part of a batch inside the batch: the same event again is a
            # duplicate; the same id for something else is a conflict, as across calls.
            if unique[slot].event != event:
                raise EventIdConflict(event.event_id, "repeated in the batch with other content")
            slots.append(slot)
            repeats.add(index)
            continue
        if payloads is not None:
            payload = payloads[index]
            if len(payload) > payload_limit:
                raise PayloadTooLarge(f"events[{index}]", len(payload), payload_limit)
        else:
            try:
                payload = encode(event, limit=payload_limit)
            except PayloadTooLarge as exc:
                raise PayloadTooLarge(f"events[{index}]", exc.size, exc.limit) from exc
        first_slot[event.event_id] = len(unique)
        slots.append(len(unique))
        unique.append(PreparedEvent(event, payload))
    return PreparedBatch(user_id, expected_version, unique, slots, frozenset(repeats))


def prepare_request(
    request: AppendRequest, *, payload_limit: int = MAX_PAYLOAD_BYTES
) -> PreparedBatch | PortraitError:
    """:func:`prepare_batch` for one request of ``append_many``: its error is returned."""
    if not isinstance(request, AppendRequest):
        return InvalidField("request", f"must be an AppendRequest, got {type(request).__name__}")
    try:
        return prepare_batch(
            request.user_id,
            request.events,
            request.expected_version,
            payload_limit=payload_limit,
            payloads=request.payloads,
        )
    except PortraitError as exc:
        return exc


def check_recorded(event: Event, recorded: Event) -> None:
    """Raise EventIdConflict unless ``recorded`` (same user, same event_id) is ``event``.
    Event ids are per user, so another user's events never meet here."""
    if recorded != event:
        raise EventIdConflict(event.event_id, "already recorded with different content")


def check_snapshot(snapshot: object) -> None:
    """Raise InvalidField unless ``snapshot`` is a well-formed :class:`Snapshot`."""
    if not isinstance(snapshot, Snapshot):
        raise InvalidField("snapshot", f"must be a Snapshot, got {type(snapshot).__name__}")
    check_count("snapshot.seq", snapshot.seq)
    if not isinstance(snapshot.state, bytes):
        raise InvalidField("snapshot.state", "must be bytes")
    for name in ("user_id", "config_hash"):
        value = getattr(snapshot, name)
        if not isinstance(value, str) or not value:
            raise InvalidField(f"snapshot.{name}", "must be a non-empty string")


__all__ = [
    "PreparedBatch",
    "PreparedEvent",
    "check_count",
    "check_read",
    "check_recorded",
    "check_snapshot",
    "check_time",
    "prepare_batch",
    "prepare_request",
]
