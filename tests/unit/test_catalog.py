"""ItemRecord validation, the item text template and from_dict."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portrait.catalog import ItemRecord, from_dict, item_text, parse_tags
from portrait.errors import InvalidField, MissingField


def test_minimal_item_has_empty_defaults() -> None:
    item = ItemRecord("m1", "Heat (1995)")
    assert (item.description, item.tags, dict(item.attributes)) == ("", (), {})


def test_containers_are_copied_and_read_only() -> None:
    tags = ["Crime"]
    attributes = {"year": 1995}
    item = ItemRecord("m1", "Heat", tags=tags, attributes=attributes)  # type: ignore[arg-type]
    tags.append("Drama")
    attributes["year"] = 2000
    assert item.tags == ("Crime",)
    assert item.attributes["year"] == 1995
    with pytest.raises(TypeError):
        item.attributes["year"] = 1  # type: ignore[index]
    assert hash(item) == hash(ItemRecord("m1", "Heat", tags=("Crime",), attributes={"year": 1995}))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"item_id": ""}, "item_id"),
        ({"item_id": "x" * 129}, "item_id"),
        ({"item_id": 7}, "item_id"),
        ({"title": "   "}, "title"),
        ({"title": "t" * 501}, "title"),
        ({"description": "d" * 8_001}, "description"),
        ({"description": None}, "description"),
        ({"tags": "Crime|Drama"}, "tags"),
        ({"tags": tuple(f"t{i}" for i in range(65))}, "tags"),
        ({"tags": ("ok", "")}, "tags[1]"),
        ({"tags": ("x" * 65,)}, "tags[0]"),
        ({"tags": ("ok", 3)}, "tags[1]"),
        ({"attributes": {"year": [1995]}}, "attributes.year"),
        ({"attributes": {"score": math.nan}}, "attributes.score"),
        ({"attributes": {"note": "n" * 1_001}}, "attributes.note"),
        ({"attributes": {"": 1}}, "attributes"),
        ({"attributes": [("year", 1)]}, "attributes"),
    ],
)
def test_invalid_fields_are_named(kwargs: dict[str, object], field: str) -> None:
    base: dict[str, object] = {"item_id": "m1", "title": "Heat"}
    with pytest.raises(InvalidField) as info:
        ItemRecord(**{**base, **kwargs})  # type: ignore[arg-type]
    assert info.value.field == field


def test_limits_are_inclusive() -> None:
    ItemRecord(
        "x" * 128,
        "t" * 500,
        "d" * 8_000,
        tuple("x" * 62 + f"{i:02d}" for i in range(64)),
        {"flag": True, "n": 3, "f": 0.5, "s": "s"},
    )


@pytest.mark.parametrize(
    ("item", "text"),
    [
        (ItemRecord("1", "Toy Story (1995)"), "Toy Story (1995)"),
        (
            ItemRecord("1", "Toy Story (1995)", tags=("Animation", "Comedy")),
            "Toy Story (1995). Tags: Animation, Comedy",
        ),
        (
            ItemRecord("1", "Heat (1995)", "Users tagged: heist.", ("Crime",)),
            "Heat (1995). Tags: Crime. Users tagged: heist.",
        ),
        (ItemRecord("1", "Heat", "A heist film."), "Heat. A heist film."),
        (ItemRecord("1", "Airplane!", tags=("Comedy",)), "Airplane! Tags: Comedy"),
        (ItemRecord("1", " Heat ", "   "), "Heat"),
        # Attributes are structured data, never part of the text.
        (ItemRecord("1", "Heat", attributes={"year": 1995}), "Heat"),
    ],
)
def test_item_text_template(item: ItemRecord, text: str) -> None:
    assert item_text(item) == text


_words = st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12)


# Any text an item may hold: everything but NUL and lone surrogates (portrait.validation).
_free_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                     max_size=40)


@settings(max_examples=60, deadline=None)
@given(title=_words, tags=st.lists(_words, max_size=4), description=_free_text)
def test_item_text_keeps_every_part_in_order(
    title: str, tags: list[str], description: str
) -> None:
    text = item_text(ItemRecord("i", title, description, tuple(tags)))
    assert text.startswith(title)
    if tags:
        assert ". Tags: " + ", ".join(tags) in text
    else:
        assert "Tags:" not in text or "Tags:" in description
    body = description.strip()
    assert text.endswith(body)
    assert ".." not in text[: len(text) - len(body)]  # no doubled separators before the body


def test_from_dict_accepts_id_or_item_id_and_both_tag_forms() -> None:
    a = from_dict({"id": "m1", "title": "Heat", "tags": "Crime| Drama |"})
    b = from_dict({"item_id": "m1", "title": "Heat", "tags": ["Crime", "Drama"]})
    assert a == b
    assert a.tags == ("Crime", "Drama")
    c = from_dict({"id": "m2", "title": "X", "description": None, "attributes": {"year": 1}})
    assert (c.description, dict(c.attributes)) == ("", {"year": 1})


@pytest.mark.parametrize(
    ("data", "error", "field"),
    [
        ({"title": "Heat"}, MissingField, "item_id"),
        ({"id": "m1"}, MissingField, "title"),
        ({"id": "m1", "item_id": "m1", "title": "Heat"}, InvalidField, "id"),
        ({"id": "m1", "title": "Heat", "genre": "Crime"}, InvalidField, "genre"),
        ({"id": "", "title": "Heat"}, InvalidField, "id"),
        ({"id": "m1", "title": "Heat", "tags": 3}, InvalidField, "tags"),
        ({"id": "m1", "title": "Heat", "tags": ["a", 3]}, InvalidField, "tags[1]"),
    ],
)
def test_from_dict_errors_name_the_key(
    data: dict[str, object], error: type[Exception], field: str
) -> None:
    with pytest.raises(error) as info:
        from_dict(data)
    assert info.value.field == field  # type: ignore[attr-defined]


def test_parse_tags_drops_blanks() -> None:
    assert parse_tags(" a | |b ") == ("a", "b")
    assert parse_tags(None) == ()


def test_to_dict_round_trips_through_from_dict() -> None:
    from portrait.catalog import ItemRecord, from_dict, to_dict

    item = ItemRecord("m1", "Alien", "In space no one can hear you scream.", ("Horror", "Sci-Fi"),
                      {"year": 1979, "rated": "R"})
    assert from_dict(to_dict(item)) == item
