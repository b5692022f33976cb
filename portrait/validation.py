"""Value rules every input passes before the domain accepts it: ids, free text, times.

Each rule raises :class:`~portrait.errors.InvalidField` naming the field, never anything
else, so hostile input becomes a 4xx that says what to fix instead of a crash further down
(a NUL that Postgres refuses inside a shared transaction, a lone surrogate that cannot be
encoded as UTF-8, an integer too large for a float).

Pure: the standard library only.
"""

from __future__ import annotations

import math

from portrait.errors import InvalidField

# 9999-12-31T23:59:59Z: the last second ISO-8601 and every database can spell.
MAX_UNIX_TIME = 253_402_300_799


def is_number(value: object) -> bool:
    """An int or a float, not a bool (which Python counts as an int, JSON does not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_id(name: str, value: object, max_length: int) -> None:
    """An identifier: 1 to ``max_length`` printable characters (letters, digits, punctuation,
    symbols and the ASCII space; no control, format, surrogate or unassigned code points)."""
    if not isinstance(value, str):
        raise InvalidField(name, f"must be a string, got {type(value).__name__}")
    if not 0 < len(value) <= max_length:
        raise InvalidField(name, f"must be 1 to {max_length} characters")
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidField(name, f"must be printable text; U+{ord(bad):04X} is not allowed")


def check_text(name: str, value: object, max_length: int, *, required: bool) -> None:
    """Free text: at most ``max_length`` characters, valid Unicode (no lone surrogates) and no
    NUL; line breaks and tabs are fine. ``required`` refuses blank text."""
    if not isinstance(value, str):
        raise InvalidField(name, f"must be a string, got {type(value).__name__}")
    if required and not value.strip():
        raise InvalidField(name, "must not be empty")
    if len(value) > max_length:
        raise InvalidField(name, f"must be at most {max_length} characters")
    if "\x00" in value:
        raise InvalidField(name, "must not contain NUL (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidField(
            name, f"is not valid Unicode (lone surrogate U+{ord(value[exc.start]):04X})"
        ) from None


def check_unix_time(name: str, value: object) -> None:
    """Unix seconds: a finite number from 0 to :data:`MAX_UNIX_TIME` (integers of any size
    are compared exactly, never converted to a float that would overflow)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidField(name, f"must be Unix seconds (a number), got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidField(name, "must be a finite number of Unix seconds")
    if not 0 <= value <= MAX_UNIX_TIME:
        raise InvalidField(
            name, f"must be between 0 and {MAX_UNIX_TIME} Unix seconds (year 9999)"
        )
