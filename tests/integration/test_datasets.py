"""Dataset loaders against the real files: bundled MovieLens, shared Amazon, generic example."""

from __future__ import annotations

import hashlib
import json
import re
import time
from pathlib import Path

import pytest

from portrait.catalog import item_text
from portrait.errors import InvalidField
from portrait.events import ItemRated, ReviewWritten, SearchPerformed
from storage.datasets import (
    Dataset,
    bundled_movielens_dir,
    event_sort_key,
    load_amazon,
    load_generic,
    load_movielens,
    shared_datasets_dir,
)
from storage.datasets.generic import parse_timestamp

GENERIC = Path(__file__).resolve().parents[1] / "data" / "generic"
INTERACTIONS_HEADER = "user_id,item_id,timestamp,event_type,rating,text"
_shared = shared_datasets_dir()
AMAZON = _shared / "amazon-reviews-2018-small" if _shared else None
needs_amazon = pytest.mark.skipif(
    AMAZON is None or not AMAZON.is_dir(),
    reason="Amazon reviews are not bundled (research-use terms); set PORTRAIT_DATASETS_DIR "
    "to a folder holding amazon-reviews-2018-small/ to run these tests",
)


def assert_sorted_by_tie_rule(dataset: Dataset) -> None:
    keys = [event_sort_key(e) for e in dataset.events]
    assert keys == sorted(keys)
    assert len({e.event_id for e in dataset.events}) == len(dataset.events)


def test_a_configured_datasets_dir_wins(tmp_path: Path) -> None:
    assert shared_datasets_dir(tmp_path) == tmp_path
    assert shared_datasets_dir(tmp_path / "missing") is None


# --- MovieLens (bundled) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def movielens() -> Dataset:
    started = time.perf_counter()
    dataset = load_movielens()
    elapsed = time.perf_counter() - started
    print(f"\nMovieLens ml-latest-small loaded in {elapsed:.2f}s")
    # About 1 s on a quiet laptop core; the bound is loose for shared CI machines.
    assert elapsed < 15
    return dataset


def test_bundled_copy_ships_with_its_licence() -> None:
    folder = bundled_movielens_dir()
    for name in ("README.txt", "README.md", "movies.csv", "ratings.csv", "tags.csv", "links.csv"):
        assert (folder / name).is_file(), name
    assert "Usage License" in (folder / "README.txt").read_text(encoding="utf-8")


def test_bundled_files_match_the_readme_checksums() -> None:
    folder = bundled_movielens_dir()
    listed = re.findall(r"^\| `([\w.]+)` \| (\d+) \| `([0-9a-f]{64})` \|$",
                        (folder / "README.md").read_text(encoding="utf-8"), re.MULTILINE)
    assert len(listed) == 5
    for name, size, digest in listed:
        data = (folder / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (int(size), digest), name


def test_movielens_counts(movielens: Dataset) -> None:
    stats = movielens.stats()
    assert stats["items"] == 9_742
    assert stats["events"] == stats["events_rating"] == 100_836
    assert stats["users"] == 610
    assert stats["events_unknown_item"] == 0
    assert stats["tag_applications"] == 3_683
    assert all(isinstance(e, ItemRated) for e in movielens.events)


def test_movielens_items(movielens: Dataset) -> None:
    items = {item.item_id: item for item in movielens.items}
    toy_story = items["1"]
    assert toy_story.title == "Toy Story (1995)"
    assert toy_story.tags == ("Adventure", "Animation", "Children", "Comedy", "Fantasy")
    assert toy_story.attributes["year"] == 1995
    assert toy_story.description.startswith("Users tagged: ")
    assert {"pixar", "fun"} <= set(toy_story.description.removeprefix("Users tagged: ").split(", "))
    assert item_text(toy_story).startswith("Toy Story (1995). Tags: Adventure, Animation")
    # Quoted titles with commas survive, and "(no genres listed)" means no tags.
    assert items["11"].title == "American President, The (1995)"
    no_genres = [i for i in movielens.items if not i.tags]
    assert no_genres and all(i.tags == () for i in no_genres)
    # Series years "(2006–2007)" give the start year; titles without a year get no attribute.
    assert sum("year" not in i.attributes for i in movielens.items) == 12
    pulp = items["296"].description.removeprefix("Users tagged: ").split(", ")
    assert len(pulp) == 20  # capped at the 20 most frequent
    assert len({t.casefold() for t in pulp}) == 20


def test_movielens_events_follow_the_tie_rule(movielens: Dataset) -> None:
    assert_sorted_by_tie_rule(movielens)
    first = movielens.events[0]
    assert (first.event_id, first.user_id) == ("ml:429:150:rating", "429")
    assert first.occurred_at == 828124615.0
    # Ties on occurred_at are common (bulk rating); they are broken by user id, then event id.
    times = [e.occurred_at for e in movielens.events]
    assert len(set(times)) < len(times)


def test_movielens_rejects_a_bad_row(tmp_path: Path) -> None:
    (tmp_path / "movies.csv").write_text("movieId,title,genres\r\n1,Heat (1995),Crime\r\n")
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\r\n1,1,4.0,964982703\r\n1,1,9.0,964982703\r\n"
    )
    with pytest.raises(InvalidField) as info:
        load_movielens(tmp_path)
    assert info.value.field == "ratings.csv:3:movieId"  # rated twice
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\r\n1,1,9.0,1\r\n")
    with pytest.raises(InvalidField) as info:
        load_movielens(tmp_path)
    assert info.value.field == "ratings.csv:2:rating"


# --- Amazon (shared folder only) -------------------------------------------------------------


@needs_amazon
def test_amazon_magazines_with_meta() -> None:
    assert AMAZON is not None
    started = time.perf_counter()
    dataset = load_amazon(
        AMAZON / "Magazine_Subscriptions_5.json.gz", AMAZON / "meta_Magazine_Subscriptions.json.gz"
    )
    print(f"\nAmazon Magazine_Subscriptions loaded in {time.perf_counter() - started:.2f}s")
    stats = dataset.stats()
    print({k: v for k, v in stats.items() if k not in ("first_event_at", "last_event_at")})
    assert stats["duplicate_lines"] == 42  # 2,375 lines, 2,333 distinct
    assert stats["events"] == 2_333
    assert stats["meta_duplicate_lines"] == 1_065
    assert stats["users"] == 348
    assert stats["events_unknown_item"] == 0
    assert stats["items_from_reviews"] == 6  # reviewed items without a meta record
    assert_sorted_by_tie_rule(dataset)
    reviews = [e for e in dataset.events if isinstance(e, ReviewWritten)]
    assert len(reviews) == stats["events"]  # every review here has a summary or a body
    assert all(e.rating is not None and 1 <= e.rating <= 5 for e in reviews)
    assert all("<a " not in e.text and "&nbsp;" not in e.text for e in reviews)
    # Broken scraped titles are replaced; nothing with markup reaches the encoder.
    assert not any("<" in i.title or "/>" in i.title for i in dataset.items)
    assert all(i.title for i in dataset.items)


@needs_amazon
def test_amazon_without_meta_builds_items_from_reviews() -> None:
    assert AMAZON is not None
    dataset = load_amazon(AMAZON / "All_Beauty_5.json.gz")
    stats = dataset.stats()
    assert stats["duplicate_lines"] == 1_027
    assert stats["items"] == stats["items_from_reviews"] == 85
    assert stats["users"] == 991
    # Distinct lines that agree on user, item, time, rating and text are one review.
    assert (stats["duplicate_records"], stats["events"]) == (24, 4_218)
    item = dataset.items[0]
    assert item.title == f"Item {item.item_id}"
    assert dataset.events == load_amazon(AMAZON / "All_Beauty_5.json.gz").events  # deterministic


def test_amazon_skips_incomplete_records(tmp_path: Path) -> None:
    good = json.dumps(
        {"reviewerID": "u1", "asin": "a1", "overall": 4, "unixReviewTime": 10, "summary": "Good"}
    )
    lines = [
        good,
        good,
        '{"reviewerID": "u2", "asin": "a1", "overall": 2.0, "unixReviewTime": 11}',
        '{"asin": "a1", "overall": 2.0, "unixReviewTime": 12}',
        json.dumps({"reviewerID": "u3", "asin": "a1", "overall": 5, "unixReviewTime": 13,
                    "summary": "Five Stars", "reviewText": "Love <b>it</b>&nbsp;a lot"}),
        json.dumps({"reviewerID": "u4", "asin": "a1", "overall": 5, "unixReviewTime": 14,
                    "summary": "Wow!", "reviewText": "Smells nice"}),
    ]
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(lines) + "\n")
    dataset = load_amazon(path)
    stats = dataset.stats()
    assert (stats["duplicate_lines"], stats["skipped_missing_fields"]) == (1, 1)
    types = [type(e) for e in dataset.events]
    assert types == [ReviewWritten, ItemRated, ReviewWritten, ReviewWritten]
    texts = [e.text for e in dataset.events if isinstance(e, ReviewWritten)]
    assert texts == ["Good", "Five Stars. Love it a lot", "Wow! Smells nice"]
    # Star-count headlines say nothing about the item, so they stay out of its description.
    assert dataset.items[0].description == "Good. Wow!"
    path.write_text("not json\n")
    with pytest.raises(InvalidField) as info:
        load_amazon(path)
    assert info.value.field == "reviews.json:1:*"


# --- Generic format --------------------------------------------------------------------------


def test_generic_example_loads() -> None:
    dataset = load_generic(GENERIC / "interactions.csv", GENERIC / "items.csv")
    stats = dataset.stats()
    assert (stats["items"], stats["events"], stats["users"]) == (4, 9, 2)
    assert stats["events_unknown_item"] == 0
    assert {e.TYPE for e in dataset.events} == {
        "view", "click", "add_to_cart", "purchase", "dismiss", "rating", "review", "search"
    }
    assert_sorted_by_tie_rule(dataset)
    review = next(e for e in dataset.events if isinstance(e, ReviewWritten))
    assert review.text.startswith("Sturdy, quiet,") and review.rating == 4.5
    search = next(e for e in dataset.events if isinstance(e, SearchPerformed))
    assert search.query == "trail running shoes"
    assert dataset.items[0].tags == ("kitchen", "coffee")
    again = load_generic(GENERIC / "interactions.csv", GENERIC / "items.csv")
    assert [e.event_id for e in again.events] == [e.event_id for e in dataset.events]


def test_timestamps_unix_or_iso() -> None:
    assert parse_timestamp("1709283600") == parse_timestamp("2024-03-01T09:00:00Z")
    assert parse_timestamp("2024-03-01T09:00:00") == parse_timestamp("2024-03-01T10:00:00+01:00")
    for bad in ("", "yesterday", "-5", "nan"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def _interactions(tmp_path: Path, *rows: str, header: str = INTERACTIONS_HEADER) -> Path:
    path = tmp_path / "interactions.csv"
    path.write_text("\n".join((header, *rows)) + "\n", encoding="utf-8")
    return path


GOOD_ROW = "u1,i1,1700000000,view,,"


@pytest.mark.parametrize(
    ("bad_row", "field"),
    [
        ("u1,i1,last tuesday,view,,", "interactions.csv:7:timestamp"),
        ("u1,i1,1700000000,like,,", "interactions.csv:7:event_type"),
        ("u1,i1,1700000000,review,4,", "interactions.csv:7:text"),
        ("u1,,1700000000,search,,", "interactions.csv:7:text"),
        ("u1,i1,1700000000,rating,,", "interactions.csv:7:rating"),
        ("u1,i1,1700000000,rating,7,", "interactions.csv:7:rating"),
        ("u1,i1,1700000000,rating,five,", "interactions.csv:7:rating"),
        ("u1,i1,1700000000,view,3,", "interactions.csv:7:rating"),
        ("u1,i1,1700000000,click,,nice", "interactions.csv:7:text"),
        ("u1,,1700000000,view,,", "interactions.csv:7:item_id"),
        (",i1,1700000000,view,,", "interactions.csv:7:user_id"),
        ("u1,i1,1700000000,view", "interactions.csv:7:*"),
    ],
)
def test_malformed_generic_rows_name_file_line_and_column(
    tmp_path: Path, bad_row: str, field: str
) -> None:
    path = _interactions(tmp_path, *[GOOD_ROW] * 5, bad_row)  # header is line 1
    with pytest.raises(InvalidField) as info:
        load_generic(path)
    assert info.value.field == field
    assert field in str(info.value)


def test_generic_header_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(InvalidField) as info:
        load_generic(_interactions(tmp_path, GOOD_ROW, header="user_id,item_id,timestamp,type"))
    assert info.value.field == "interactions.csv:1:event_type"
    # A repeated row is one fact; an explicit event_id may not be reused.
    assert load_generic(_interactions(tmp_path, GOOD_ROW, GOOD_ROW)).stats()["duplicate_rows"] == 1
    header = INTERACTIONS_HEADER + ",event_id"
    with pytest.raises(InvalidField) as info:
        load_generic(_interactions(tmp_path, GOOD_ROW + ",e1", "u2,i1,1,view,,,e1", header=header))
    assert info.value.field == "interactions.csv:3:event_id"


def test_generic_items_errors(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_text("item_id,title,tags\ni1,Mug,kitchen\ni1,Cup,kitchen\n")
    with pytest.raises(InvalidField) as info:
        load_generic(_interactions(tmp_path, GOOD_ROW), items)
    assert info.value.field == "items.csv:3:item_id"
    items.write_text("item_id,title,tags\ni1,,kitchen\n")
    with pytest.raises(InvalidField) as info:
        load_generic(_interactions(tmp_path, GOOD_ROW), items)
    assert info.value.field == "items.csv:2:title"


def test_readme_shows_the_generic_example_the_tests_load() -> None:
    from storage.datasets.paths import repo_root

    readme = (repo_root() / "README.md").read_text()
    for name in ("interactions.csv", "items.csv"):
        body = (repo_root() / "tests/data/generic" / name).read_text().replace("\r\n", "\n")
        assert f"```csv\n{body}```" in readme, name


def test_evaluation_describes_review_items_by_training_reviews_only(tmp_path: Path) -> None:
    """An evaluation must not see held-out reviews in the catalog, yet items known only from
    reviews need text: each phase rebuilds their descriptions from its training reviews."""
    from offline.prepare import phase_items
    from portrait.evaluation.splits import leave_last_out

    def review(user: str, asin: str, t: int, summary: str) -> str:
        return json.dumps({"reviewerID": user, "asin": asin, "overall": 5,
                           "unixReviewTime": t, "summary": summary, "reviewText": "ok"})

    lines = [review("u1", "a1", 1, "Soft"), review("u1", "a2", 2, "Bright"),
             review("u1", "a3", 3, "Held out headline"),
             review("u2", "a1", 4, "Gentle"), review("u2", "a2", 5, "Vivid"),
             review("u2", "a3", 6, "Second held out")]
    path = tmp_path / "reviews.json"
    path.write_text("\n".join(lines) + "\n")
    dataset = load_amazon(path)
    # The catalog for the service keeps every review's headline ...
    assert {i.item_id: i.description for i in dataset.items}["a3"] == (
        "Held out headline. Second held out")
    validation, test = leave_last_out(dataset.events)
    items, rebuilt = phase_items(dataset, test.train_events)
    described = {i.item_id: i.description for i in items}
    # ... the test phase sees only the reviews it trains on: a3 is every user's last item.
    assert rebuilt == 3
    assert described == {"a1": "Soft. Gentle", "a2": "Bright. Vivid", "a3": ""}
    assert [i.title for i in items] == ["Item a1", "Item a2", "Item a3"]
    val_items, _ = phase_items(dataset, validation.train_events)
    assert {i.item_id: i.description for i in val_items} == {"a1": "Soft. Gentle", "a2": "",
                                                             "a3": ""}
    # Datasets whose items carry their own text are returned unchanged.
    from storage.datasets import load_movielens
    movielens = load_movielens()
    assert phase_items(movielens, movielens.events[:10]) == (list(movielens.items), 0)
