"""The "bring your own data" format: ``interactions.csv`` plus ``items.csv``.

Both are UTF-8 CSV files with a header row; columns may come in any order; unknown columns are
an error (a typo must not silently drop data). Example: ``tests/data/generic/``.

``interactions.csv``, one behaviour event per row:

=============  ========  ==================================================================
column         required  meaning
=============  ========  ==================================================================
user_id        yes       whose event it is (1-128 characters)
item_id        yes*      the item; *may be empty for ``search`` (ignored there)
timestamp      yes       Unix seconds (``1537799250`` or ``1537799250.5``) or ISO-8601
                         (``2018-09-24T14:27:30Z``); no offset means UTC
event_type     yes       view, click, add_to_cart, purchase, dismiss, rating, review, search
rating         no        0-5; required for ``rating``, optional for ``review``, else empty
text           no        required for ``review`` (the review) and ``search`` (the query),
                         else empty
event_id       no        your idempotency key; when absent or empty, one is derived
=============  ========  ==================================================================

Derived event ids are ``"gen:" + 20 hex digits`` of a hash of the row's parsed values, so a
reload gives the same ids; rows that are equal in every value are one event, and the repeats
are dropped (``duplicate_rows`` in ``stats()``).

``items.csv``: ``item_id``, ``title`` (required), ``description``, ``tags`` (``|``-separated).

Any bad value raises :class:`~portrait.errors.InvalidField` whose field is
``"<file>:<line>:<column>"``, e.g. ``"interactions.csv:7:timestamp"``; line 1 is the header.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from portrait import catalog
from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from portrait.events import EVENT_TYPES, Event, ItemRated, ReviewWritten, SearchPerformed
from storage.datasets.base import Dataset, location, read_csv

EVENT_TYPE_NAMES = ("view", "click", "add_to_cart", "purchase", "dismiss", "rating", "review",
                    "search")
INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp", "event_type")
OPTIONAL_INTERACTION_COLUMNS = ("rating", "text", "event_id")
ITEM_COLUMNS = ("item_id", "title")
OPTIONAL_ITEM_COLUMNS = ("description", "tags")
# Event/item field -> the CSV column a user has to fix.
_COLUMN_OF = {"occurred_at": "timestamp", "query": "text", "text": "text", "rating": "rating",
              "user_id": "user_id", "item_id": "item_id", "event_id": "event_id",
              "title": "title", "description": "description"}


def load_generic(
    interactions_csv: Path | str, items_csv: Path | str | None = None, *, name: str | None = None
) -> Dataset:
    """Load the generic format (see the module docstring).

    Args:
        interactions_csv: the events file.
        items_csv: the catalog file; ``None`` for events only.
        name: dataset name; defaults to ``"generic-" +`` the interactions file's folder name.

    Raises:
        InvalidField: ``"<file>:<line>:<column>"`` naming the first bad value.
    """
    interactions_csv = Path(interactions_csv)
    items = _items(Path(items_csv)) if items_csv is not None else []
    counters: Counter[str] = Counter(duplicate_rows=0)
    events: dict[str, Event] = {}
    lines: dict[str, int] = {}
    for line, row in read_csv(interactions_csv, INTERACTION_COLUMNS, OPTIONAL_INTERACTION_COLUMNS):
        event, explicit_id = _event(interactions_csv, line, row)
        if event.event_id in events:
            if explicit_id:
                raise InvalidField(
                    location(interactions_csv, line, "event_id"),
                    f"{event.event_id!r} already used on line {lines[event.event_id]}",
                )
            counters["duplicate_rows"] += 1
            continue
        events[event.event_id] = event
        lines[event.event_id] = line
    label = name or f"generic-{interactions_csv.resolve().parent.name}"
    return Dataset.build(label, items, events.values(), counters)


def read_interactions(path: Path | str) -> Iterator[tuple[int, Event | InvalidField]]:
    """Every row of an interactions file as ``(line, event)``, or ``(line, the error)`` for a
    row that is not a valid event: for imports, which report bad rows and go on. A bad
    header still raises (nothing of the file can be read)."""
    path = Path(path)
    errors: list[InvalidField] = []
    for line, row in read_csv(path, INTERACTION_COLUMNS, OPTIONAL_INTERACTION_COLUMNS,
                              on_bad_row=errors.append):
        while errors:
            yield _line_of(errors[0]), errors.pop(0)
        try:
            yield line, _event(path, line, row)[0]
        except InvalidField as exc:
            yield line, exc
    for error in errors:
        yield _line_of(error), error


def _line_of(error: InvalidField) -> int:
    return int(error.field.split(":")[-2])


def parse_timestamp(value: str) -> float:
    """Unix seconds from ``"1537799250"``, ``"1537799250.5"`` or ISO-8601 text.

    ISO-8601 without an offset is taken as UTC: Portrait's event times are UTC throughout.

    Raises:
        ValueError: with a message fit for the user.
    """
    text = value.strip()
    if not text:
        raise ValueError("required")
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r} is neither Unix seconds nor ISO-8601 (2018-09-24T14:27:30Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp()
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{text!r} must be a finite time at or after 1970-01-01")
    return seconds


def _event(path: Path, line: int, row: dict[str, str]) -> tuple[Event, bool]:
    """The event on one interactions row, and whether its id came from the file."""

    def fail(column: str, reason: str) -> InvalidField:
        return InvalidField(location(path, line, column), reason)

    event_type = row["event_type"].strip()
    if event_type not in EVENT_TYPE_NAMES:
        raise fail("event_type", f"unknown event type {event_type!r}; one of {EVENT_TYPE_NAMES}")
    try:
        occurred_at = parse_timestamp(row["timestamp"])
    except ValueError as exc:
        raise fail("timestamp", str(exc)) from None
    user = row["user_id"].strip()
    item = "" if event_type == SearchPerformed.TYPE else row["item_id"].strip()
    text = row.get("text", "").strip()
    raw_rating = row.get("rating", "").strip()

    if event_type in (ReviewWritten.TYPE, SearchPerformed.TYPE):
        if not text:
            raise fail("text", f"required for {event_type!r} events")
    elif text:
        raise fail("text", f"only review and search events carry text, not {event_type!r}")
    rating: float | None = None
    if raw_rating:
        if event_type not in (ItemRated.TYPE, ReviewWritten.TYPE):
            raise fail(
                "rating", f"only rating and review events carry a rating, not {event_type!r}"
            )
        try:
            rating = float(raw_rating)
        except ValueError:
            raise fail("rating", f"{raw_rating!r} is not a number") from None
    elif event_type == ItemRated.TYPE:
        raise fail("rating", "required for 'rating' events")
    if not item and event_type != SearchPerformed.TYPE:
        raise fail("item_id", f"required for {event_type!r} events")

    event_id = row.get("event_id", "").strip()
    explicit = bool(event_id)
    if not explicit:
        # Parsed values, not raw text: "1537799250" and its ISO spelling are the same event.
        key = "\x1f".join((user, event_type, item, repr(occurred_at), repr(rating), text))
        event_id = "gen:" + hashlib.sha256(key.encode()).hexdigest()[:20]
    cls = EVENT_TYPES[event_type]
    try:
        if cls is SearchPerformed:
            return SearchPerformed(event_id, user, occurred_at, text), explicit
        if cls is ReviewWritten:
            return ReviewWritten(event_id, user, occurred_at, item, text, rating), explicit
        if cls is ItemRated:
            # A missing rating is refused by ItemRated itself, naming the field.
            return ItemRated(event_id, user, occurred_at, item, cast(float, rating)), explicit
        return cls(event_id, user, occurred_at, item), explicit  # type: ignore[call-arg]
    except InvalidField as exc:
        raise fail(_COLUMN_OF.get(exc.field, exc.field), exc.reason) from None


def _items(path: Path) -> list[ItemRecord]:
    items: list[ItemRecord] = []
    first_line: dict[str, int] = {}
    for line, row in read_csv(path, ITEM_COLUMNS, OPTIONAL_ITEM_COLUMNS):
        try:
            item = catalog.from_dict({key: value.strip() for key, value in row.items()})
        except InvalidField as exc:
            column = exc.field.split("[")[0]  # tags[2] -> tags
            column = _COLUMN_OF.get(column, column)
            raise InvalidField(location(path, line, column), exc.reason) from None
        if item.item_id in first_line:
            raise InvalidField(
                location(path, line, "item_id"),
                f"{item.item_id!r} already defined on line {first_line[item.item_id]}",
            )
        first_line[item.item_id] = line
        items.append(item)
    return items
