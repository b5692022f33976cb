"""Catalog items as the domain sees them, and the one text template the encoder reads.

An :class:`ItemRecord` is what a loader or the API hands to catalog building: an id, a title,
optional description, tags and scalar attributes. It is validated on construction, so anything
holding one can trust it. :func:`item_text` is the *only* place where an item becomes text for
the encoder; change it there and every producer follows.

Pure domain: no I/O, no infrastructure imports.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

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

MAX_VECTOR_DIM = 8_192
MAX_VECTOR_MODEL_LENGTH = 200

AttributeValue = str | int | float | bool
_FROM_DICT_KEYS = frozenset({"id", "item_id", "title", "description", "tags", "attributes"})
VECTOR_KEYS = frozenset({"vector", "vector_b64", "vector_model"})


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


@dataclass(frozen=True, slots=True, eq=False)
class ItemVector:
    """A vector the shop computed for an item (bring your own vectors), used in place of
    encoding the item's text.

    Checked on construction: one dimension of 1 to :data:`MAX_VECTOR_DIM` finite numbers, not
    all zero. It is stored L2-normalised as float32, as the encoder's own vectors are, so a
    re-import of the same numbers compares equal byte for byte and writes nothing. Whether its
    width and model fit the item space is the catalog's check (it knows the active encoder).

    Attributes:
        values: float32, unit length, read-only.
        model_id: the model that produced it (``vector_model``).
        field: the key it arrived under (``vector`` or ``vector_b64``), for error names.
    """

    values: np.ndarray
    model_id: str
    field: str = "vector"

    def __post_init__(self) -> None:
        check_text("vector_model", self.model_id, MAX_VECTOR_MODEL_LENGTH, required=True)
        raw = np.asarray(self.values)
        if raw.ndim != 1 or not 0 < raw.shape[0] <= MAX_VECTOR_DIM:
            raise InvalidField(self.field, f"must be a list of 1 to {MAX_VECTOR_DIM} numbers")
        if raw.dtype.kind not in "fiu":
            raise InvalidField(self.field, "must hold numbers only")
        wide = raw.astype(np.float64)
        if not np.all(np.isfinite(wide)):
            raise InvalidField(self.field, "must hold finite numbers (no NaN or infinity)")
        peak = float(np.max(np.abs(wide)))
        if peak == 0.0:
            raise InvalidField(self.field, "must not be all zeros")
        scaled = wide / peak  # scaled first, so 1e300s do not overflow the norm
        unit = (scaled / np.linalg.norm(scaled)).astype("<f4")
        unit.setflags(write=False)
        object.__setattr__(self, "values", unit)

    @property
    def dim(self) -> int:
        return int(self.values.shape[0])

    def stored_bytes(self) -> bytes:
        """The little-endian float32 bytes the catalog stores (and compares)."""
        return bytes(self.values.tobytes())


def vector_to_b64(values: np.ndarray) -> str:
    """``vector_b64`` of ``values``: base64 of little-endian float32 (what bulk loads send)."""
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _vector_from_list(value: object) -> np.ndarray:
    if not isinstance(value, (list, tuple)):
        raise InvalidField("vector", "must be a list of numbers")
    if not 0 < len(value) <= MAX_VECTOR_DIM:
        raise InvalidField("vector", f"must be a list of 1 to {MAX_VECTOR_DIM} numbers")
    for i, x in enumerate(value):
        # bool is an int subclass, and JSON true is no coordinate.
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InvalidField(f"vector[{i}]", "must be a number")
    try:
        return np.asarray(value, dtype=np.float64)
    except OverflowError:  # an int beyond float64
        raise InvalidField("vector", "must hold finite numbers (no NaN or infinity)") from None


def _vector_from_b64(value: object) -> np.ndarray:
    if not isinstance(value, str):
        raise InvalidField("vector_b64", "must be a base64 string")
    if len(value) > (MAX_VECTOR_DIM * 4 + 2) // 3 * 4:
        raise InvalidField("vector_b64", f"more than {MAX_VECTOR_DIM} numbers")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidField("vector_b64", "is not valid base64") from None
    if not raw or len(raw) % 4:
        raise InvalidField("vector_b64", "must be whole little-endian float32 numbers "
                                         f"({len(raw)} bytes is no multiple of 4)")
    return np.frombuffer(raw, dtype="<f4")


def vector_from_dict(data: Mapping[str, Any]) -> ItemVector | None:
    """The precomputed vector of an item mapping: ``vector`` (a list of numbers) or
    ``vector_b64`` (base64 of little-endian float32), with ``vector_model``; None when the
    item has neither (``None`` counts as absent).

    Raises:
        MissingField, InvalidField: naming the key at fault (``vector[2]``, ``vector_model``).
    """
    given = [k for k in ("vector", "vector_b64") if data.get(k) is not None]
    model = data.get("vector_model")
    if not given:
        if model is not None:
            raise InvalidField("vector_model", "given without 'vector' or 'vector_b64'")
        return None
    if len(given) > 1:
        raise InvalidField("vector_b64", "give either 'vector' or 'vector_b64', not both")
    key = given[0]
    if model is None:
        raise MissingField("vector_model")
    if not isinstance(model, str):
        raise InvalidField("vector_model", "must be a string")
    values = _vector_from_list(data[key]) if key == "vector" else _vector_from_b64(data[key])
    try:
        return ItemVector(values, model, key)
    except InvalidField as exc:
        if exc.field == "vector":  # the checks name the generic key; name the one sent
            raise InvalidField(key, exc.reason) from exc
        raise


def item_from_dict(data: Mapping[str, Any]) -> tuple[ItemRecord, ItemVector | None]:
    """:func:`from_dict` for an item that may carry a precomputed vector
    (:func:`vector_from_dict`): what ``POST /v1/items`` accepts."""
    if not isinstance(data, Mapping):
        raise InvalidField("item", f"must be an object, got {type(data).__name__}")
    record = from_dict({k: v for k, v in data.items() if k not in VECTOR_KEYS})
    return record, vector_from_dict(data)
