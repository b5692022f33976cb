"""The event codec: round trips, upcasting and clear errors on bad input."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portrait import codec
from portrait.errors import (
    InvalidField,
    InvalidInput,
    MissingField,
    PayloadTooLarge,
    UnknownEventType,
)
from portrait.events import (
    EVENT_CLASSES,
    AttributesSet,
    ItemAddedToCart,
    ItemClicked,
    ItemDismissed,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
)

BASE = {"event_id": "e1", "user_id": "u1", "occurred_at": 1_600_000_000.5}

ONE_OF_EACH = [
    ItemViewed(**BASE, item_id="i1"),
    ItemClicked(**BASE, item_id="i1"),
    ItemAddedToCart(**BASE, item_id="i1"),
    ItemPurchased(**BASE, item_id="i1"),
    ItemDismissed(**BASE, item_id="i1"),
    ItemRated(**BASE, item_id="i1", rating=4.5),
    ReviewWritten(**BASE, item_id="i1", text="Great fun, loved the score", rating=5.0),
    ReviewWritten(**BASE, item_id="i1", text="no rating here"),
    SearchPerformed(**BASE, query="space opera with robots"),
    AttributesSet(**BASE, attributes={"age_band": "25-34", "language": "de"}),
]


def test_every_event_class_is_covered() -> None:
    assert {type(e) for e in ONE_OF_EACH} == set(EVENT_CLASSES)


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.TYPE)
def test_round_trip_msgpack_and_dict(event) -> None:
    assert codec.decode(codec.encode(event)) == event
    assert codec.from_dict(codec.to_dict(event)) == event


def test_review_v1_payload_is_upcast_to_v2() -> None:
    # Bytes exactly as a v1 writer stored them: "body" and integer "stars".
    stored = msgpack.packb(
        {"type": "review", "schema_version": 1, **BASE, "item_id": "i9", "body": "Meh.", "stars": 2}
    )
    event = codec.decode(stored)
    assert event == ReviewWritten(**BASE, item_id="i9", text="Meh.", rating=2.0)
    assert codec.to_dict(event)["schema_version"] == 2


@pytest.mark.parametrize("stars", ["five", [2], True])
def test_a_v1_review_whose_stars_are_no_number_is_refused_naming_stars(stars: object) -> None:
    with pytest.raises(InvalidField) as err:
        codec.from_dict({"type": "review", "schema_version": 1, **BASE, "item_id": "i9",
                         "body": "Meh.", "stars": stars})
    assert err.value.field == "stars"


def test_unknown_type() -> None:
    with pytest.raises(UnknownEventType) as err:
        codec.from_dict({"type": "teleport", **BASE})
    assert err.value.field == "type"


def test_missing_field_is_named() -> None:
    with pytest.raises(MissingField) as err:
        codec.from_dict({"type": "rating", **BASE, "item_id": "i1"})
    assert err.value.field == "rating"


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"rating": "five"}, "rating"),
        ({"rating": 7}, "rating"),
        ({"rating": True}, "rating"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": -1}, "occurred_at"),
        ({"occurred_at": float("nan")}, "occurred_at"),
        ({"user_id": ""}, "user_id"),
        ({"item_id": 12}, "item_id"),
        ({"event_id": "x" * 500}, "event_id"),
        ({"colour": "red"}, "colour"),
        ({"schema_version": 99}, "schema_version"),
        ({"schema_version": "1"}, "schema_version"),
    ],
)
def test_wrong_types_and_values_are_named(patch: dict, field: str) -> None:
    data = {"type": "rating", **BASE, "item_id": "i1", "rating": 4.0, **patch}
    with pytest.raises(InvalidField) as err:
        codec.from_dict(data)
    assert err.value.field == field


def test_attribute_keys_are_closed() -> None:
    with pytest.raises(InvalidField) as err:
        codec.from_dict({"type": "attributes_set", **BASE, "attributes": {"income": "high"}})
    assert err.value.field == "attributes.income"


def test_empty_text_rejected() -> None:
    with pytest.raises(InvalidField) as err:
        codec.from_dict({"type": "search", **BASE, "query": "   "})
    assert err.value.field == "query"


def test_oversized_payload_rejected_on_encode_and_decode() -> None:
    big = SearchPerformed(**BASE, query="word " * 1500)
    with pytest.raises(PayloadTooLarge):
        codec.encode(big, limit=1024)
    with pytest.raises(PayloadTooLarge):
        codec.decode(b"\x00" * 2048, limit=1024)


def test_garbage_bytes_are_an_invalid_payload() -> None:
    with pytest.raises(InvalidField) as err:
        codec.decode(b"\xc1\xc1\xc1")
    assert err.value.field == "payload"
    with pytest.raises(InvalidField):
        codec.decode(msgpack.packb([1, 2, 3]))


def test_events_are_frozen() -> None:
    event = ONE_OF_EACH[-1]
    with pytest.raises(AttributeError):
        event.user_id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        event.attributes["age_band"] = "65+"  # type: ignore[index]


def test_errors_survive_pickling_across_processes() -> None:
    import pickle

    from portrait.errors import EventIdConflict, VersionConflict

    for err in (InvalidField("events[2].rating", "too high"), PayloadTooLarge("event", 9, 4),
                VersionConflict("u", 3, 5), EventIdConflict("e1", "reused"), UnknownEventType("x")):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err) and str(back) == str(err)
        assert back.__dict__ == err.__dict__


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.TYPE)
def test_stored_payloads_decode_to_equal_events(event) -> None:
    back = codec.decode_stored(codec.encode(event))
    assert back == event and type(back) is type(event)


def test_stored_payloads_still_get_structural_checks_and_upcasts() -> None:
    with pytest.raises(UnknownEventType):
        codec.decode_stored(msgpack.packb({"type": "teleport", **BASE}))
    with pytest.raises(MissingField):
        codec.decode_stored(msgpack.packb({"type": "rating", **BASE, "item_id": "i"}))
    v1 = msgpack.packb(
        {"type": "review", "schema_version": 1, **BASE, "item_id": "i9", "body": "Meh.", "stars": 2}
    )
    assert codec.decode_stored(v1) == ReviewWritten(**BASE, item_id="i9", text="Meh.", rating=2.0)


# -- properties over hostile values ------------------------------------------------------------

_extreme_numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -0.0, 2**63, 2**64, 253_402_300_799, 253_402_300_800, 1e308, 5e-324]),
)
_any_text = st.text(st.characters(), max_size=200)  # NUL, controls and lone surrogates included
_values = st.one_of(_extreme_numbers, _any_text, st.none(), st.booleans(),
                    st.lists(_any_text, max_size=3), st.dictionaries(_any_text, _any_text,
                                                                      max_size=3))


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    kind=st.sampled_from(["view", "click", "add_to_cart", "purchase", "dismiss", "rating",
                          "review", "search", "attributes_set", "nope"]),
    fields=st.dictionaries(
        st.sampled_from(["event_id", "user_id", "occurred_at", "item_id", "rating", "text",
                         "query", "attributes"]),
        _values, max_size=3),
)
def test_any_json_event_is_accepted_and_round_trips_or_refused_by_field(
    kind: str, fields: dict[str, object]
) -> None:
    """The codec's contract under hostile values: an event either decodes, encodes and
    decodes back equal (and its stored text is valid UTF-8 without NUL), or is refused with an
    InvalidInput naming a field; nothing else ever escapes."""
    valid = {"event_id": "e1", "user_id": "u1", "occurred_at": 1_700_000_000, "item_id": "i1",
             "rating": 4, "text": "fine", "query": "shoes", "attributes": {"region": "eu"}}
    try:
        event = codec.from_dict({"type": kind, **_fields_of(kind, valid), **fields})
    except InvalidInput as exc:
        assert exc.field
        return
    payload = codec.encode(event)
    assert codec.decode(payload) == event
    for value in vars_of(event):
        if isinstance(value, str):
            value.encode("utf-8")
            assert "\x00" not in value


def vars_of(event: object) -> list[object]:
    return [getattr(event, name) for name in getattr(event, "__slots__", ())
            if hasattr(event, name)] + [getattr(event, n) for n in
                                         ("event_id", "user_id", "occurred_at")]


def _fields_of(kind: str, valid: dict[str, object]) -> dict[str, object]:
    """The valid fields an event of ``kind`` takes, so that the hostile ones meet a well-formed
    event (they would otherwise mostly hit a missing field first)."""
    common = ["event_id", "user_id", "occurred_at"]
    extra = {"rating": ["item_id", "rating"], "review": ["item_id", "text"],
             "search": ["query"], "attributes_set": ["attributes"], "nope": []}
    names = common + extra.get(kind, ["item_id"])
    return {n: valid[n] for n in names}
