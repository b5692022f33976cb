"""The event codec: msgpack bytes and plain mappings <-> typed events, with upcasting.

Wire shape (both msgpack and JSON)::

    {"type": "rating", "schema_version": 1, "event_id": "...", "user_id": "...",
     "occurred_at": 1537799250.0, "item_id": "...", "rating": 4.5}

Stored payloads may be older than the code reading them: ``UPCASTERS`` turns version ``n`` of
a type's fields into version ``n + 1`` until the current class's version is reached. An upcaster
is a pure function of the field mapping and never touches the common envelope fields.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import msgpack

from portrait.errors import InvalidField, MissingField, PayloadTooLarge, UnknownEventType
from portrait.events import EVENT_TYPES, AttributesSet, Event, ReviewWritten
from portrait.validation import is_number

MAX_PAYLOAD_BYTES = 64 * 1024
ENVELOPE_FIELDS = ("event_id", "user_id", "occurred_at")
_MISSING = object()

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _review_v1_to_v2(fields: dict[str, Any]) -> dict[str, Any]:
    """v1 reviews had ``body`` and required integer ``stars``; v2 has ``text`` and ``rating``."""
    out = {k: v for k, v in fields.items() if k not in ("body", "stars")}
    if "body" in fields:
        out["text"] = fields["body"]
    stars = fields.get("stars")
    if stars is not None:
        # A client may still send v1 reviews: a non-number is its error (422), not a crash.
        if not is_number(stars):
            raise InvalidField("stars", "must be a number")
        out["rating"] = float(stars)
    return out


UPCASTERS: Mapping[tuple[str, int], Upcaster] = {
    (ReviewWritten.TYPE, 1): _review_v1_to_v2,
}

# Field names per class, computed once: decoding is on the replay hot path.
_FIELDS: dict[type[Event], tuple[str, ...]] = {
    cls: tuple(f.name for f in dataclasses.fields(cls)) for cls in EVENT_TYPES.values()
}
_REQUIRED: dict[type[Event], frozenset[str]] = {
    cls: frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    for cls in EVENT_TYPES.values()
}


_DEFAULTS: dict[type[Event], dict[str, Any]] = {
    cls: {
        f.name: f.default
        for f in dataclasses.fields(cls)
        if f.default is not dataclasses.MISSING
    }
    for cls in EVENT_TYPES.values()
}
_ALLOWED: dict[type[Event], frozenset[str]] = {
    cls: frozenset(names) for cls, names in _FIELDS.items()
}


def to_dict(event: Event) -> dict[str, Any]:
    """The wire mapping of an event, at its current schema version."""
    out: dict[str, Any] = {"type": event.TYPE, "schema_version": event.SCHEMA_VERSION}
    for name in _FIELDS[type(event)]:
        out[name] = getattr(event, name)
    if out.get("request_id", _MISSING) is None:
        # Optional and added later: left out when unset, so such events keep the bytes (and
        # the content digest) they had before the field existed.
        del out["request_id"]
    if isinstance(event, AttributesSet):  # the only field that is not a scalar
        out["attributes"] = dict(event.attributes)
    return out


def from_dict(data: Mapping[str, Any]) -> Event:
    """Build a typed event from its wire mapping, upcasting older versions.

    ``schema_version`` may be omitted (the current version is assumed). Unknown fields are
    rejected so that a typo is an error rather than silently dropped data.

    Raises:
        UnknownEventType, MissingField, InvalidField: naming the field at fault.
    """
    if not isinstance(data, Mapping):
        raise InvalidField("event", f"must be an object, got {type(data).__name__}")
    return _build(dict(data))


def _slot_setters(cls: type[Event]) -> dict[str, Any]:
    """Each field's slot setter: frozen dataclasses forbid setattr, their slots do not."""
    return {name: getattr(cls, name).__set__ for name in _FIELDS[cls]}


_SETTERS = {cls: _slot_setters(cls) for cls in EVENT_TYPES.values()}


def _unchecked(cls: type[Event], fields: dict[str, Any]) -> Event:
    """An event built without re-running its validation (see :func:`decode_stored`)."""
    event = object.__new__(cls)
    setters = _SETTERS[cls]
    for name, value in fields.items():
        setters[name](event, value)
    if len(fields) < len(setters):
        for name, value in _DEFAULTS[cls].items():
            if name not in fields:
                setters[name](event, value)
    if cls is AttributesSet:
        attributes = MappingProxyType(dict(fields.get("attributes", {})))
        object.__setattr__(event, "attributes", attributes)
    return event


def _build(fields: dict[str, Any], trusted: bool = False) -> Event:
    """:func:`from_dict` on a mapping the caller owns (it is consumed)."""
    event_type = fields.pop("type", _MISSING)
    if event_type is _MISSING:
        raise MissingField("type")
    cls = EVENT_TYPES.get(event_type) if isinstance(event_type, str) else None
    if cls is None:
        raise UnknownEventType(event_type)
    version = fields.pop("schema_version", cls.SCHEMA_VERSION)
    # Fast path (every replayed event of the current version): one set comparison decides
    # that the fields are exactly right, then the class validates the values.
    if (
        version == cls.SCHEMA_VERSION
        and type(version) is int
        and fields.keys() <= _ALLOWED[cls]
        and _REQUIRED[cls] <= fields.keys()
    ):
        return _unchecked(cls, fields) if trusted else cls(**fields)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise InvalidField("schema_version", "must be a positive integer")
    if version > cls.SCHEMA_VERSION:
        raise InvalidField(
            "schema_version",
            f"{event_type!r} version {version} is newer than this build ({cls.SCHEMA_VERSION})",
        )
    while version < cls.SCHEMA_VERSION:
        upcast = UPCASTERS.get((event_type, version))
        if upcast is None:
            raise InvalidField("schema_version", f"no upcaster from {event_type!r} v{version}")
        fields = upcast(fields)
        version += 1
    allowed = _FIELDS[cls]
    for name in fields:
        if name not in allowed:
            raise InvalidField(name, f"unexpected field for {event_type!r} events")
    for name in _REQUIRED[cls]:
        if name not in fields:
            raise MissingField(name)
    try:
        return cls(**fields)
    except TypeError as exc:  # defensive: a field the checks above did not foresee
        raise InvalidField("event", str(exc)) from exc


def encode(event: Event, *, limit: int = MAX_PAYLOAD_BYTES) -> bytes:
    """msgpack bytes of an event. Raises PayloadTooLarge beyond ``limit`` bytes."""
    data = msgpack.packb(to_dict(event), use_bin_type=True)
    if len(data) > limit:
        raise PayloadTooLarge("event", len(data), limit)
    result: bytes = data
    return result


def decode_stored(data: bytes) -> Event:
    """Decode a payload read back from Portrait's own log.

    Stored events were validated when they were appended, and a fact once recorded must stay
    readable even if a later release tightens validation, so current-version payloads are
    not validated again (this halves replay's decode cost). Structure is still checked:
    unknown types, missing or unexpected fields raise as in :func:`decode`; older versions
    are upcast and then fully validated.
    """
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidField("payload", f"not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidField("payload", f"must encode an object, got {type(obj).__name__}")
    return _build(obj, trusted=True)


def decode(data: bytes, *, limit: int = MAX_PAYLOAD_BYTES) -> Event:
    """The typed event in msgpack ``data``; older schema versions are upcast.

    Raises:
        PayloadTooLarge, UnknownEventType, MissingField, InvalidField.
    """
    if len(data) > limit:
        raise PayloadTooLarge("payload", len(data), limit)
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidField("payload", f"not valid msgpack: {exc}") from exc
    if not isinstance(obj, dict):
        raise InvalidField("payload", f"must encode an object, got {type(obj).__name__}")
    return _build(obj)
