"""Amazon Review Data (2018) loader: gzipped (or plain) JSON-lines reviews and product metadata.

Reviews -> events (user id ``reviewerID``, item id ``asin``, time ``unixReviewTime``):

* with text: :class:`~portrait.events.ReviewWritten`, ``text`` = summary and reviewText joined
  as ``"{summary}. {reviewText}"`` (no extra ``"."`` when the summary already ends in ``.!?``;
  either part alone when the other is missing), HTML removed, ``rating`` = ``overall``;
* without text: :class:`~portrait.events.ItemRated` with ``overall``.

Event id ``"amz:{reviewerID}:{asin}:{unixReviewTime}:{digest}"``, the digest being a hash of
the rating and text: a user can review one item several times (even on the same day), and
records that agree on all of these are one fact, dropped as ``duplicate_records``.

Items: from the metadata file when given (``title`` when usable, else a fallback; see
:func:`_meta_item`); reviewed items that have no metadata record, or all items when no metadata
file is given, are built from reviews (:func:`review_item`): ``title`` ``"Item {asin}"`` and as
description up to 3 distinct review summaries. Built from *all* reviews, such a description
would leak held-out reviews into an evaluation's catalog, so the dataset also carries each
review's summary (``review_summaries``) and the evaluation rebuilds those descriptions from its
training reviews only (:func:`offline.prepare.phase_items`).

File hygiene (see the dataset's README): exact duplicate lines are dropped before anything
else (``duplicate_lines``, ``meta_duplicate_lines``); records missing a required field are
skipped (``skipped_missing_fields``), as are records whose values fail validation
(``skipped_invalid``); over-long texts are cut to the event/item limits (``texts_truncated``).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from portrait.catalog import MAX_DESCRIPTION_LENGTH, MAX_TAG_LENGTH, MAX_TAGS, ItemRecord
from portrait.errors import InvalidField
from portrait.events import MAX_TEXT_LENGTH, ItemEvent, ItemRated, ReviewWritten
from storage.datasets.base import Dataset, clean_html, event_sort_key, location, truncate

MAX_SUMMARIES = 3
COUNTERS = (
    "duplicate_lines", "duplicate_records", "skipped_missing_fields", "skipped_invalid",
    "texts_truncated", "meta_duplicate_lines", "meta_duplicate_asins", "meta_skipped",
    "titles_fallback", "items_from_reviews",
)
FALLBACK_TITLE_LENGTH = 120
# Amazon fills an empty headline with the star count; it says nothing about the item.
_STAR_SUMMARY = re.compile(r"^(one|two|three|four|five) stars?$", re.IGNORECASE)


def load_amazon(
    reviews_path: Path | str, meta_path: Path | str | None = None, *, name: str | None = None
) -> Dataset:
    """Load one category's reviews (and optionally its metadata) as a :class:`Dataset`.

    Args:
        reviews_path: ``<Category>_5.json.gz`` (or an uncompressed ``.json``).
        meta_path: ``meta_<Category>.json.gz``, if available.
        name: dataset name; defaults to ``"amazon-" + `` the reviews file's stem.

    Raises:
        InvalidField: ``"<file>:<line>:*"`` for a line that is not a JSON object.
    """
    reviews_path = Path(reviews_path)
    # Every counter is reported, zeros included, so stats() has the same keys for every file.
    counters: Counter[str] = Counter(dict.fromkeys(COUNTERS, 0))
    events: dict[str, ItemEvent] = {}
    headline: dict[str, str] = {}  # event id -> the review's summary
    for record in _unique_records(reviews_path, counters, "duplicate_lines"):
        parsed = _review_event(record, counters)
        if parsed is None:
            continue
        event, summary = parsed
        if event.event_id in events:
            counters["duplicate_records"] += 1
            continue
        events[event.event_id] = event
        headline[event.event_id] = summary
    ordered = sorted(events.values(), key=event_sort_key)
    # Summaries are taken in event order, so the description does not depend on file order.
    summaries: dict[str, list[str]] = {}
    for event in ordered:
        summaries.setdefault(event.item_id, []).append(headline[event.event_id])

    items: dict[str, ItemRecord] = {}
    if meta_path is not None:
        for record in _unique_records(Path(meta_path), counters, "meta_duplicate_lines"):
            item = _meta_item(record, counters)
            if item is None:
                counters["meta_skipped"] += 1
            elif item.item_id in items:
                counters["meta_duplicate_asins"] += 1  # same asin, different line: first wins
            else:
                items[item.item_id] = item
    from_reviews = sorted(summaries.keys() - items.keys())
    for asin in from_reviews:
        counters["items_from_reviews"] += 1
        items[asin] = review_item(asin, summaries[asin])
    stem = reviews_path.name.split(".")[0]
    described = frozenset(from_reviews)
    return Dataset(
        name or f"amazon-{stem}", list(items.values()), list(ordered), dict(counters),
        review_summaries={
            e.event_id: headline[e.event_id] for e in ordered if e.item_id in described
        },
    )


def review_description(summaries: Iterable[str]) -> str:
    """An item's description from its reviews' headlines (in event order): the first
    :data:`MAX_SUMMARIES` distinct ones (case-insensitively), star-count headlines skipped."""
    kept: list[str] = []
    for summary in summaries:
        if summary and not _STAR_SUMMARY.match(summary):
            if summary.casefold() not in {k.casefold() for k in kept}:
                kept.append(summary)
                if len(kept) == MAX_SUMMARIES:
                    break
    return truncate(_join_sentences(kept), MAX_DESCRIPTION_LENGTH)


def review_item(asin: str, summaries: Iterable[str]) -> ItemRecord:
    """The catalog record of an item known only from reviews."""
    return ItemRecord(asin, f"Item {asin}", review_description(summaries))


def _unique_records(path: Path, counters: Counter[str], key: str) -> Iterator[dict[str, Any]]:
    """JSON objects of a (gzipped) JSON-lines file, exact duplicate lines dropped."""
    seen: set[str] = set()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if line in seen:
                counters[key] += 1
                continue
            seen.add(line)
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidField(location(path, line_number, "*"), f"not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise InvalidField(location(path, line_number, "*"), "not a JSON object")
            yield record


def _text(value: object) -> str:
    return clean_html(value) if isinstance(value, str) else ""


def _join_sentences(parts: list[str]) -> str:
    """Non-empty parts joined by spaces, each but the last ending in ``.``, ``!`` or ``?``."""
    parts = [p for p in parts if p]
    last = len(parts) - 1
    return " ".join(
        p if i == last or p.endswith((".", "!", "?")) else p + "." for i, p in enumerate(parts)
    )


def _review_event(
    record: dict[str, Any], counters: Counter[str]
) -> tuple[ItemEvent, str] | None:
    """The event for a review record and its cleaned summary, or None when it is skipped."""
    user, asin = record.get("reviewerID"), record.get("asin")
    raw_rating, raw_time = record.get("overall"), record.get("unixReviewTime")
    if not (isinstance(user, str) and user and isinstance(asin, str) and asin) or any(
        isinstance(v, bool) or not isinstance(v, (int, float)) for v in (raw_rating, raw_time)
    ):
        counters["skipped_missing_fields"] += 1
        return None
    rating, time = float(raw_rating), float(raw_time)  # type: ignore[arg-type]  # checked above
    if not (math.isfinite(rating) and math.isfinite(time)):  # json.loads accepts NaN
        counters["skipped_invalid"] += 1
        return None
    summary = _text(record.get("summary"))
    text = _join_sentences([summary, _text(record.get("reviewText"))])
    if len(text) > MAX_TEXT_LENGTH:
        counters["texts_truncated"] += 1
        text = truncate(text, MAX_TEXT_LENGTH)
    digest = hashlib.sha256(f"{float(rating)!r}\x1f{text}".encode()).hexdigest()[:10]
    event_id = f"amz:{user}:{asin}:{int(time)}:{digest}"
    try:
        if text:
            return ReviewWritten(event_id, user, float(time), asin, text, float(rating)), summary
        return ItemRated(event_id, user, float(time), asin, float(rating)), summary
    except InvalidField:
        counters["skipped_invalid"] += 1
        return None


def _usable_title(raw: str) -> str:
    # The 2018 meta dumps hold scraped HTML fragments instead of titles for most items.
    title = " ".join(raw.split())
    return "" if not title or "<" in title or ">" in title or len(title) > 500 else title


def _fallback_title(asin: str, leaf: str, brand: str, description: str) -> str:
    if leaf and brand:
        return f"{leaf} by {brand}"
    if leaf or brand:
        return leaf or brand
    first_sentence = re.split(r"(?<=[.!?])\s", description, maxsplit=1)[0]
    return truncate(first_sentence, FALLBACK_TITLE_LENGTH) or f"Item {asin}"


def _meta_item(record: dict[str, Any], counters: Counter[str]) -> ItemRecord | None:
    """An item from a metadata record.

    Title: the record's title when usable (no markup left, at most 500 characters); otherwise
    ``"{leaf category} by {brand}"``, or whichever of the two exists, or the description's
    first sentence (at most 120 characters), or ``"Item {asin}"``. Brand falls back to the
    ``details`` publisher. Description: the description list, HTML stripped, joined by spaces.
    Tags: the category path minus its top level (the category of the whole file).
    """
    asin = record.get("asin")
    if not isinstance(asin, str) or not asin:
        return None
    raw_categories = record.get("category")
    categories: list[Any] = raw_categories if isinstance(raw_categories, list) else []
    tags: list[str] = []
    for category in categories[1:]:
        tag = _text(category)
        if tag and len(tag) <= MAX_TAG_LENGTH and tag not in tags and len(tags) < MAX_TAGS:
            tags.append(tag)
    raw_details = record.get("details")
    details: dict[str, Any] = raw_details if isinstance(raw_details, dict) else {}
    brand = _text(record.get("brand")) or _text(details.get("Publisher:"))
    parts = record.get("description")
    parts = [parts] if isinstance(parts, str) else parts if isinstance(parts, list) else []
    description = " ".join(t for t in (_text(p) for p in parts) if t)
    if len(description) > MAX_DESCRIPTION_LENGTH:
        counters["texts_truncated"] += 1
        description = truncate(description, MAX_DESCRIPTION_LENGTH)
    title = _usable_title(_text(record.get("title")))
    if not title:
        counters["titles_fallback"] += 1
        title = _fallback_title(asin, tags[-1] if tags else "", brand, description)
    attributes: dict[str, str] = {}
    if brand:
        attributes["brand"] = brand[:1000]
    if _text(details.get("Format:")):
        attributes["format"] = _text(details.get("Format:"))[:1000]
    try:
        return ItemRecord(asin, title[:500], description, tuple(tags), attributes)
    except InvalidField:
        return None
