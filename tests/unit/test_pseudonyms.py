"""Pseudonyms: stable under one key, different under another, and not the id."""

from __future__ import annotations

from portrait.pseudonyms import pseudonymizer

USER = "alice@example.com"


def test_pseudonyms_are_stable_keyed_and_not_the_id() -> None:
    one, other = pseudonymizer(b"k" * 32), pseudonymizer(b"j" * 32)
    assert one(USER) == one(USER) != other(USER)
    assert one(USER) != one("bob") and USER not in one(USER)
    assert one(USER).startswith("p:") and len(one(USER)) == 34
