"""Catalog items as the domain sees them, and the one text template the encoder reads.

An :class:`ItemRecord` is what a loader or the API hands to catalog building: an id, a title,
optional description, tags and scalar attributes. It is validated on construction, so anything
holding one can trust it. :func:`item_text` is the *only* place where an item becomes text for
the encoder; change it there and every producer follows.

Pure domain: no I/O, no infrastructure imports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from portrait.errors import InvalidField, MissingField
from portrait.validation import check_id, check_text

MAX_ITEM_ID_LENGTH = 128
MAX_TITLE_LENGTH = 500
MAX_DESCRIPTION_LENGTH = 8_000
MAX_TAGS = 64
MAX_TAG_LENGTH = 64
MAX_ATTRIBUTE_KEY_LENGTH = 64
MAX_ATTRIBUTE_STRING_LENGTH = 1_000
TAG_SEPARATOR = "|"

AttributeValue = str | int | float | bool
_FROM_DICT_KEYS = frozenset({"id", "item_id", "title", "description", "tags", "attributes"})


def _check_attribute(key: object, value: object) -> None:
    if not isinstance(key, str) or not 0 < len(key) <= MAX_ATTRIBUTE_KEY_LENGTH:
        raise InvalidField("attributes", f"keys must be 1 to {MAX_ATTRIBUTE_KEY_LENGTH} characters")
    check_id("attributes", key, MAX_ATTRIBUTE_KEY_LENGTH)
    name = f"attributes.{key}"
    if isinstance(value, str):
        check_text(name, value, MAX_ATTRIBUTE_STRING_LENGTH, required=False)
    elif isinstance(value, float):
        # NaN and infinities have no JSON spelling; refusing them keeps items JSON-round-trippable.
        if not math.isfinite(value):
            raise InvalidField(name, "must be a finite number")
    elif not isinstance(value, int):  # bool is an int subclass, so it lands here as accepted
        raise InvalidField(name, f"must be a string, number or boolean, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class ItemRecord:
    """One catalog item, validated on construction.

    Attributes:
        item_id: 1 to 128 characters; unique within a catalog.
        title: non-empty, at most 500 characters.
        description: at most 8,000 characters; may be empty.
        tags: at most 64 tags, each a non-empty string of at most 64 characters. A list is
            accepted and stored as a tuple.
        attributes: JSON scalars (str, int, float, bool) by key, e.g. ``{"year": 1995}``.
            Stored read-only.

    Raises:
        InvalidField: naming the offending field (``tags[3]``, ``attributes.year``...).
    """

    item_id: str
    title: str
    description: str = ""
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_id("item_id", self.item_id, MAX_ITEM_ID_LENGTH)
        check_text("title", self.title, MAX_TITLE_LENGTH, required=True)
        check_text("description", self.description, MAX_DESCRIPTION_LENGTH, required=False)
        if isinstance(self.tags, str) or not isinstance(self.tags, (tuple, list)):
            raise InvalidField("tags", "must be a list of strings")
        if len(self.tags) > MAX_TAGS:
            raise InvalidField("tags", f"at most {MAX_TAGS} tags")
        for i, tag in enumerate(self.tags):
            check_text(f"tags[{i}]", tag, MAX_TAG_LENGTH, required=True)
        if not isinstance(self.attributes, Mapping):
            raise InvalidField("attributes", "must be an object")
        for key, value in self.attributes.items():
            _check_attribute(key, value)
        # Frozen means frozen: copy the containers so the caller cannot mutate them afterwards.
        object.__setattr__(self, "tags", tuple(self.tags))
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def __hash__(self) -> int:
        return hash((self.item_id, self.title, self.description, self.tags))


def item_text(item: ItemRecord) -> str:
    """The text the encoder sees for an item. This is the one template; use nothing else.

    Template: ``"{title}. Tags: {tag1}, {tag2}. {description}"``, with empty parts omitted:

    * the ``Tags: ...`` part is left out when the item has no tags;
    * the description part is left out when the description is blank;
    * each part that is followed by another ends with ``"."``, unless it already ends with
      ``.``, ``!`` or ``?`` (so ``"Airplane!"`` does not become ``"Airplane!."``);
    * parts are stripped and joined by one space; the last part is emitted as is.

    Attributes are not part of the text: they are structured data for filters, not prose.

    Examples:
        ``"Toy Story (1995). Tags: Animation, Comedy"``,
        ``"Heat (1995). Tags: Crime. Users tagged: heist"``, ``"Item B00005N7P0"``.
    """
    parts = [item.title.strip()]
    if item.tags:
        parts.append("Tags: " + ", ".join(tag.strip() for tag in item.tags))
    description = item.description.strip()
    if description:
        parts.append(description)
    out = []
    for i, part in enumerate(parts):
        if i < len(parts) - 1 and not part.endswith((".", "!", "?")):
            part += "."
        out.append(part)
    return " ".join(out)


def parse_tags(value: object, field_name: str = "tags") -> tuple[str, ...]:
    """Tags from a list of strings or a ``|``-separated string; blanks are dropped.

    Raises:
        InvalidField: when ``value`` is neither a string nor a list of strings.
    """
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(TAG_SEPARATOR) if t.strip())
    if isinstance(value, (list, tuple)):
        for i, tag in enumerate(value):
            if not isinstance(tag, str):
                raise InvalidField(f"{field_name}[{i}]", "must be a string")
        return tuple(t.strip() for t in value if t.strip())
    raise InvalidField(field_name, "must be a list of strings or a '|'-separated string")


def to_dict(item: ItemRecord) -> dict[str, Any]:
    """The API/JSON mapping of ``item``; :func:`from_dict` of it gives an equal record."""
    return {"id": item.item_id, "title": item.title, "description": item.description,
            "tags": list(item.tags), "attributes": dict(item.attributes)}


def from_dict(data: Mapping[str, Any]) -> ItemRecord:
    """Build an item from an API/CSV mapping.

    Keys: ``id`` or ``item_id`` (exactly one), ``title``, optional ``description``, ``tags``
    (a list or a ``|``-separated string) and ``attributes``. ``None`` counts as absent for the
    optional keys. Unknown keys are rejected so that a typo is an error, not lost data.

    Raises:
        MissingField, InvalidField: naming the field at fault.
    """
    if not isinstance(data, Mapping):
        raise InvalidField("item", f"must be an object, got {type(data).__name__}")
    for key in data:
        if key not in _FROM_DICT_KEYS:
            raise InvalidField(str(key), "unexpected field for an item")
    if "id" in data and "item_id" in data:
        raise InvalidField("id", "give either 'id' or 'item_id', not both")
    id_key = "item_id" if "item_id" in data else "id"
    if id_key not in data:
        raise MissingField("item_id")
    if "title" not in data:
        raise MissingField("title")
    description = data.get("description")
    attributes = data.get("attributes")
    try:
        return ItemRecord(
            item_id=data[id_key],
            title=data["title"],
            description="" if description is None else description,
            tags=parse_tags(data.get("tags")),
            attributes={} if attributes is None else attributes,
        )
    except InvalidField as exc:
        # Name the key the caller actually sent, not our internal field name.
        if exc.field == "item_id" and id_key != "item_id":
            raise InvalidField(id_key, exc.reason) from exc
        raise
