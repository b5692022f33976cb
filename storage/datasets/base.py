"""The :class:`Dataset` every loader returns, and the CSV helpers the loaders share.

Errors in input files are :class:`~portrait.errors.InvalidField` whose ``field`` is a location,
``"<file name>:<line>:<column>"`` (line 1 is the header), so a user can open the file and fix it.
"""

from __future__ import annotations

import csv
import html
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from portrait.events import Event, ItemEvent

EventKey = tuple[float, str, str]


def event_sort_key(event: Event) -> EventKey:
    """The dataset order: ``(occurred_at, user_id, event_id)``.

    Timestamps tie often (Amazon reviews have day resolution, MovieLens users rate in bursts),
    so the user id and then the event id break ties. Both compare as *strings* (``"10" < "2"``):
    the order only has to be total and reproducible, not numeric.
    """
    return (event.occurred_at, event.user_id, event.event_id)


@dataclass(frozen=True)
class Dataset:
    """Items plus events, ready for catalog building, replay or evaluation.

    Attributes:
        name: a short label such as ``"movielens-ml-latest-small"``.
        items: catalog items, with unique ids, in the loader's (deterministic) order.
        events: sorted by :func:`event_sort_key`, i.e. ``(occurred_at, user_id, event_id)``;
            event ids are unique and derived from the source data, so a reload yields the
            same ids (appending them again is an idempotent no-op).
        counters: loader-specific counts (skipped rows, dropped duplicates...), see ``stats()``.
        review_summaries: event id -> the headline of that review, for loaders that describe
            items without metadata by their reviews (:func:`~storage.datasets.amazon.
            review_description`); an evaluation rebuilds those descriptions from the reviews
            of its training events only.

    Use :meth:`build` to construct one from unsorted events; the constructor only checks.

    Raises:
        InvalidField: on duplicate item or event ids, or events out of order.
    """

    name: str
    items: list[ItemRecord]
    events: list[Event]
    counters: Mapping[str, int] = field(default_factory=dict)
    review_summaries: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        item_ids = {item.item_id for item in self.items}
        if len(item_ids) != len(self.items):
            raise InvalidField("items", "item ids must be unique")
        if len({e.event_id for e in self.events}) != len(self.events):
            raise InvalidField("events", "event ids must be unique")
        keys = [event_sort_key(e) for e in self.events]
        if any(a > b for a, b in pairwise(keys)):
            raise InvalidField("events", "must be sorted by (occurred_at, user_id, event_id)")

    @classmethod
    def build(
        cls,
        name: str,
        items: Iterable[ItemRecord],
        events: Iterable[Event],
        counters: Mapping[str, int] | None = None,
    ) -> Dataset:
        """A dataset with ``events`` sorted by the tie rule of :func:`event_sort_key`."""
        return cls(name, list(items), sorted(events, key=event_sort_key), dict(counters or {}))

    def stats(self) -> dict[str, object]:
        """Counts for logs and reports: items, events (total and per type), users, time span,
        events whose item is not in ``items``, plus the loader's ``counters``."""
        by_type = Counter(e.TYPE for e in self.events)
        item_ids = {item.item_id for item in self.items}
        unknown = sum(
            1 for e in self.events if isinstance(e, ItemEvent) and e.item_id not in item_ids
        )
        out: dict[str, object] = {
            "name": self.name,
            "items": len(self.items),
            "events": len(self.events),
            "users": len({e.user_id for e in self.events}),
            "first_event_at": self.events[0].occurred_at if self.events else None,
            "last_event_at": self.events[-1].occurred_at if self.events else None,
            "events_unknown_item": unknown,
        }
        out.update({f"events_{t}": n for t, n in sorted(by_type.items())})
        out.update(self.counters)
        return out


def location(file: Path | str, line: int, column: str) -> str:
    """``"<file name>:<line>:<column>"``, the ``field`` of errors about input files."""
    return f"{Path(file).name}:{line}:{column}"


def read_csv(
    path: Path,
    required: Sequence[str],
    optional: Sequence[str] = (),
    on_bad_row: Callable[[InvalidField], None] | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a UTF-8 CSV file with a header, as ``(line number, {column: value})``.

    Columns may come in any order. A BOM (spreadsheet exports) and CRLF line endings are fine.
    Values are not stripped here; loaders decide what whitespace means.

    Raises:
        InvalidField: ``"<file>:1:<column>"`` for a missing or unknown header column,
            ``"<file>:<line>:*"`` for a row with the wrong number of fields (passed to
            ``on_bad_row`` instead, when given).
    """
    # newline="" lets the csv module handle CRLF and newlines inside quoted fields.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise InvalidField(location(path, 1, "*"), "empty file; expected a header row")
        header = [h.strip() for h in header]
        for column in header:
            if header.count(column) > 1:
                raise InvalidField(location(path, 1, column), "column appears more than once")
        for column in required:
            if column not in header:
                raise InvalidField(location(path, 1, column), "missing header column")
        known = [*required, *optional]
        for column in header:
            if column not in known:
                raise InvalidField(location(path, 1, column), f"unknown column; expected {known}")
        width = len(header)
        for row in reader:
            if not row:  # blank line, e.g. a trailing newline
                continue
            if len(row) != width:
                bad = InvalidField(
                    location(path, reader.line_num, "*"),
                    f"expected {width} fields, found {len(row)}",
                )
                if on_bad_row is None:
                    raise bad
                on_bad_row(bad)  # reported, and the file goes on
                continue
            yield reader.line_num, dict(zip(header, row, strict=False))


_TAG = re.compile(r"<[^>]*>")


def clean_html(text: str) -> str:
    """Plain text from scraped HTML: tags removed, entities decoded, whitespace collapsed.

    Tags become spaces (``"a<br>b"`` must not turn into ``"ab"``); tags go before entities are
    decoded so that an escaped ``&lt;b&gt;`` survives as the literal text ``<b>``.
    """
    return " ".join(html.unescape(_TAG.sub(" ", text)).split())


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters at a word boundary, ending in an ellipsis."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:  # prefer a word boundary unless it throws away too much
        cut = cut[:space]
    return cut.rstrip() + "…"
