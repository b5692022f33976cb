"""MovieLens loader (ml-latest-small and the other releases with the same CSV layout).

Mapping:

* ``movies.csv`` -> one :class:`~portrait.catalog.ItemRecord` per movie. ``item_id`` is the
  movieId as a string; ``title`` is MovieLens's title verbatim (year included, articles left
  where MovieLens puts them: ``"American President, The (1995)"``); ``tags`` are the genres
  (none for ``(no genres listed)``); attribute ``year`` (int) is parsed from a trailing
  ``(1995)`` or ``(2006-2007)`` when present.
* ``tags.csv`` -> keyword material, **not** events: per movie, the user tags are de-duplicated
  case-insensitively and the 20 most frequent become the description
  ``"Users tagged: dark comedy, twist ending"`` (ties by alphabetical order; first spelling seen
  wins). Tag applications are sparse (58 users in ml-latest-small) and describe the movie
  better than the tagger.
* ``ratings.csv`` -> one :class:`~portrait.events.ItemRated` per row, event id
  ``"ml:{userId}:{movieId}:rating"``, user id the userId as a string.

``links.csv`` is not read.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from portrait.catalog import MAX_DESCRIPTION_LENGTH, ItemRecord
from portrait.errors import InvalidField
from portrait.events import ItemRated
from storage.datasets.base import Dataset, location, read_csv, truncate
from storage.datasets.paths import bundled_movielens_dir

NO_GENRES = "(no genres listed)"
MAX_USER_TAGS = 20
USER_TAGS_PREFIX = "Users tagged: "
# "(1995)" or a series' "(2006-2007)" / "(2006–2007)" at the very end of the title.
_YEAR = re.compile(r"\((\d{4})(?:\s*[-\u2013]\s*\d{4})?\)$")
# Event fields -> the ratings.csv column they come from, for error locations.
_RATING_COLUMNS = {
    "user_id": "userId",
    "item_id": "movieId",
    "rating": "rating",
    "occurred_at": "timestamp",
    "event_id": "userId",
}


def load_movielens(directory: Path | str | None = None, *, name: str | None = None) -> Dataset:
    """Load a MovieLens folder (``movies.csv``, ``ratings.csv``, optional ``tags.csv``).

    Args:
        directory: the folder; defaults to the copy bundled with the repository.
        name: dataset name; defaults to ``"movielens-" + folder name`` unless the folder name
            already starts with ``movielens``.

    Returns:
        Items in movies.csv order; ItemRated events sorted by (occurred_at, user_id, event_id).
        ``counters``: ``tag_applications``, ``movies_with_user_tags``.

    Raises:
        InvalidField: ``"<file>:<line>:<column>"`` for a malformed row or a repeated id.
        FileNotFoundError: when ``movies.csv`` or ``ratings.csv`` is missing.
    """
    folder = Path(directory) if directory is not None else bundled_movielens_dir()
    if name is None:
        name = folder.name if folder.name.startswith("movielens") else f"movielens-{folder.name}"
    tags_path = folder / "tags.csv"
    user_tags, applications = _user_tags(tags_path) if tags_path.exists() else ({}, 0)
    items = _movies(folder / "movies.csv", user_tags)
    events = _ratings(folder / "ratings.csv")
    counters = {"tag_applications": applications, "movies_with_user_tags": len(user_tags)}
    return Dataset.build(name, items, events, counters)


def _int_id(path: Path, line: int, column: str, value: str) -> str:
    value = value.strip()
    if not value.isdigit():
        raise InvalidField(location(path, line, column), f"must be an integer id, got {value!r}")
    return value


def _movies(path: Path, user_tags: dict[str, str]) -> list[ItemRecord]:
    items: list[ItemRecord] = []
    seen: set[str] = set()
    for line, row in read_csv(path, ("movieId", "title", "genres")):
        movie = _int_id(path, line, "movieId", row["movieId"])
        if movie in seen:
            raise InvalidField(location(path, line, "movieId"), f"movie {movie} listed twice")
        seen.add(movie)
        title = row["title"].strip()  # a few titles carry a trailing space
        genres = row["genres"].strip()
        tags = () if genres in ("", NO_GENRES) else tuple(g for g in genres.split("|") if g)
        match = _YEAR.search(title)
        attributes = {"year": int(match.group(1))} if match else {}
        try:
            items.append(ItemRecord(movie, title, user_tags.get(movie, ""), tags, attributes))
        except InvalidField as exc:
            column = "title" if exc.field == "title" else "genres"
            raise InvalidField(location(path, line, column), exc.reason) from exc
    return items


def _user_tags(path: Path) -> tuple[dict[str, str], int]:
    """Per movie, the ``"Users tagged: ..."`` description, and the number of tag rows."""
    counts: dict[str, Counter[str]] = {}
    spelling: dict[str, dict[str, str]] = {}
    applications = 0
    for line, row in read_csv(path, ("userId", "movieId", "tag", "timestamp")):
        movie = _int_id(path, line, "movieId", row["movieId"])
        tag = " ".join(row["tag"].split())
        if not tag:
            continue
        applications += 1
        key = tag.casefold()
        counts.setdefault(movie, Counter())[key] += 1
        spelling.setdefault(movie, {}).setdefault(key, tag)
    out: dict[str, str] = {}
    for movie, counter in counts.items():
        top = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_USER_TAGS]
        text = USER_TAGS_PREFIX + ", ".join(spelling[movie][key] for key, _ in top)
        out[movie] = truncate(text, MAX_DESCRIPTION_LENGTH)  # only absurdly long tags get here
    return out, applications


def _ratings(path: Path) -> list[ItemRated]:
    events: list[ItemRated] = []
    seen: set[str] = set()
    for line, row in read_csv(path, ("userId", "movieId", "rating", "timestamp")):
        user = _int_id(path, line, "userId", row["userId"])
        movie = _int_id(path, line, "movieId", row["movieId"])
        try:
            rating = float(row["rating"])
        except ValueError:
            raise InvalidField(location(path, line, "rating"), "must be a number") from None
        try:
            occurred_at = float(row["timestamp"])
        except ValueError:
            raise InvalidField(location(path, line, "timestamp"), "must be Unix seconds") from None
        event_id = f"ml:{user}:{movie}:rating"
        # MovieLens keeps one rating per (user, movie); a repeat would silently collapse into
        # one idempotent event downstream, so refuse it here instead.
        if event_id in seen:
            raise InvalidField(location(path, line, "movieId"), f"user {user} rated it twice")
        seen.add(event_id)
        try:
            events.append(ItemRated(event_id, user, occurred_at, movie, rating))
        except InvalidField as exc:
            column = _RATING_COLUMNS.get(exc.field, exc.field)
            raise InvalidField(location(path, line, column), exc.reason) from None
    return events
