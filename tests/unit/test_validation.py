"""Hostile values become InvalidField naming the field, never a crash further down."""

from __future__ import annotations

import pytest

from portrait import codec
from portrait.catalog import from_dict as item_from_dict
from portrait.errors import InvalidField
from portrait.validation import MAX_UNIX_TIME


def view(**overrides: object) -> dict[str, object]:
    return {"type": "view", "event_id": "e1", "user_id": "u1", "occurred_at": 1.0,
            "item_id": "i1", **overrides}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"user_id": "u\x00x"}, "user_id"),  # Postgres refuses NUL: it failed a whole commit
        ({"event_id": "e\x07"}, "event_id"),
        ({"item_id": "a\u200bb"}, "item_id"),  # zero-width space: a format character
        ({"user_id": "\ud800"}, "user_id"),  # a lone surrogate cannot be stored as UTF-8
        ({"user_id": "tab\there"}, "user_id"),
        ({"occurred_at": 2**64}, "occurred_at"),
        ({"occurred_at": 10**400}, "occurred_at"),  # was OverflowError in math.isfinite
        ({"occurred_at": MAX_UNIX_TIME + 1}, "occurred_at"),
        ({"occurred_at": float("inf")}, "occurred_at"),
        ({"occurred_at": -1}, "occurred_at"),
    ],
)
def test_event_values_that_used_to_crash_are_refused_by_field(
    overrides: dict[str, object], field: str
) -> None:
    with pytest.raises(InvalidField) as info:
        codec.from_dict(view(**overrides))
    assert info.value.field == field


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "search", "query": "shoes\x00"}, "query"),
        ({"type": "search", "query": "shoes \udc80"}, "query"),
        ({"type": "review", "item_id": "i1", "text": "ok\x00", "rating": 4}, "text"),
        ({"type": "attributes_set", "attributes": {"region": "eu\x00"}}, "attributes.region"),
    ],
)
def test_free_text_refuses_nul_and_lone_surrogates(event: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        codec.from_dict({"event_id": "e1", "user_id": "u1", "occurred_at": 1.0, **event})
    assert info.value.field == field


def test_ordinary_ids_and_text_still_pass() -> None:
    ev = codec.from_dict(view(user_id="Zoë Müller 42", item_id="tt0111161/画",
                              occurred_at=MAX_UNIX_TIME))
    assert ev.user_id == "Zoë Müller 42"
    review = codec.from_dict({"type": "review", "event_id": "e2", "user_id": "u1",
                              "occurred_at": 2, "item_id": "i", "rating": 5,
                              "text": "Great.\nWould buy again 👍\t(twice)"})
    assert "👍" in review.text  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"id": "a\x00", "title": "t"}, "id"),  # the key the caller sent
        ({"id": "a", "title": "t\ud800"}, "title"),
        ({"id": "a", "title": "t", "description": "d\x00"}, "description"),
        ({"id": "a", "title": "t", "tags": ["ok", "b\x00d"]}, "tags[1]"),
        ({"id": "a", "title": "t", "attributes": {"brand": "x\x00"}}, "attributes.brand"),
        ({"id": "a", "title": "t", "attributes": {"br\x00nd": "x"}}, "attributes"),
    ],
)
def test_catalog_items_follow_the_same_rules(record: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidField) as info:
        item_from_dict(record)
    assert info.value.field == field


def test_readiness_and_error_bodies_never_echo_driver_text() -> None:
    from portrait.errors import ShardUnavailable, StorageUnavailable
    from serve.api.errors import public_reason

    driver = RuntimeError('insert into events values ($1) [parameters: ("other-user", b"...")]')
    assert "other-user" not in public_reason(driver) and "RuntimeError" in public_reason(driver)
    assert public_reason(StorageUnavailable("connection to 10.0.0.5 refused")) == (
        "the event store is unreachable; retry later")
    assert "restarting" in public_reason(ShardUnavailable("actor 8f3a died"))
    assert public_reason(TimeoutError()).startswith("still starting")


def test_an_internal_version_conflict_is_retryable_for_clients() -> None:
    from portrait.errors import EventIdConflict, VersionConflict
    from serve.api.errors import error_body, retry_headers, status_of

    conflict = VersionConflict("u1", 3, 4)
    assert status_of(conflict) == 503 and retry_headers(503) == {"Retry-After": "2"}
    assert "u1" not in error_body(conflict)["message"]
    # The client's own mistake: do not retry.
    assert status_of(EventIdConflict("e1", "other content")) == 409


def test_a_storage_failure_body_does_not_echo_the_driver() -> None:
    from portrait.errors import StorageError
    from serve.api.errors import error_body, status_of

    exc = StorageError("value out of int64 range [SQL: SELECT ... LIMIT $4::INTEGER]")
    assert status_of(exc) == 500 and "SQL" not in error_body(exc)["message"]
