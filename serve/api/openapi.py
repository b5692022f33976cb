"""The OpenAPI document, made to say what the service does.

FastAPI's own document knows the routes and the pydantic models; the rest is Portrait's:

* the bearer scheme as the document's security requirement (none on the probes);
* per route, every status it can answer besides 200, with the error body (and the
  ``WWW-Authenticate`` or ``Retry-After`` header that comes with it);
* the value rules the domain enforces (``portrait.validation``, ``portrait.events``,
  ``portrait.catalog``), spelled as JSON Schema: printable ids, non-blank text, number
  bounds, the shape of each event type and of an item, the batch limit of this deployment.

Request bodies stay ``dict`` to pydantic: the domain validates them, so that every error
names the field the way the rest of Portrait does. The schemas here describe that validation;
``tests/api/test_openapi_fuzz.py`` holds them to it.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from portrait import catalog, events
from portrait.validation import MAX_UNIX_TIME
from serve.api.models import ErrorBody

Schema = dict[str, Any]
BEARER = "bearer"
_ERROR_BODY = "#/components/schemas/ErrorBody"

# What each status means, as the document says it.
_MEANING = {
    401: "No valid token (`Authorization: Bearer ptk_…`).",
    403: "The token lacks the route's scope.",
    404: "No such user, item, impression or experiment.",
    409: "A conflict: an event id reused with other content, or a resize already running.",
    410: "The user was erased.",
    413: "The body or the batch is over this deployment's limit.",
    422: "Invalid input; `field` names it (`events[3].rating`, `body`).",
    429: "The token is over its allowance; retry after `Retry-After` seconds.",
    503: "A dependency is starting or away (store, shards, encoder); retry after `Retry-After`.",
}
_HEADERS = {
    401: {"WWW-Authenticate": {"schema": {"type": "string"}}},
    429: {"Retry-After": {"schema": {"type": "integer"}}},
    503: {"Retry-After": {"schema": {"type": "integer"}}},
}
_AUTH = (401, 403, 429)
_READS = (*_AUTH, 404, 422, 503)
# The statuses besides 200 that each route answers. The auth ones come with its token check.
ANSWERS: dict[tuple[str, str], tuple[int, ...]] = {
    ("post", "/v1/events"): (*_AUTH, 409, 413, 422, 503),
    ("get", "/v1/users/{user_id}/events"): (*_READS, 410),
    ("get", "/v1/users/{user_id}/recommendations"): (*_AUTH, 422, 503),
    ("get", "/v1/users/{user_id}/profile"): (*_READS, 410),
    ("get", "/v1/users/{user_id}/profile/changes"): (*_AUTH, 422, 503),
    ("delete", "/v1/users/{user_id}"): (*_READS, 410),
    ("get", "/v1/users/{user_id}/summary"): (*_READS, 410),
    ("post", "/v1/items"): (*_AUTH, 413, 422, 503),
    ("put", "/v1/items/{item_id}"): (*_AUTH, 413, 422, 503),
    ("get", "/v1/items/{item_id}"): _READS,
    ("get", "/v1/item-space"): (*_AUTH, 503),
    ("post", "/v1/item-space/retrain"): (*_AUTH, 409, 422, 503),
    ("post", "/v1/impressions/{request_id}/shown"): (*_AUTH, 404, 413, 422, 503),
    ("get", "/v1/experiments/{name}/report"): _READS,
    ("get", "/v1/shards"): (*_AUTH, 503),
    ("post", "/v1/shards"): (*_AUTH, 409, 413, 422, 503),
    ("get", "/readyz"): (503,),
    ("get", "/metrics"): _AUTH,
}
# Routes anyone may call.
OPEN_ROUTES = frozenset({("get", "/healthz"), ("get", "/readyz")})
# Path parameters that are ids, and their longest length.
ID_PARAMETERS = {"user_id": events.MAX_ID_LENGTH, "item_id": catalog.MAX_ITEM_ID_LENGTH,
                 "request_id": events.MAX_ID_LENGTH, "name": events.MAX_ID_LENGTH}


# -- value rules as JSON Schema ----------------------------------------------------------------


def _escape(code: int) -> str:
    # \u and \U read the same in Python's re (schemathesis draws from it) and in Rust's
    # regex (jsonschema-rs validates with it); an ECMA reader needs the u flag for astral ones.
    return f"\\u{code:04X}" if code <= 0xFFFF else f"\\U{code:08X}"


@functools.cache
def _char_class(kind: str) -> str:
    """The code points (surrogates aside: JSON text cannot carry them alone) that
    ``str.isprintable`` accepts (``kind`` "printable") or ``str.isspace`` accepts
    ("space"), as the inside of a regex character class, from this interpreter's Unicode
    database: the same one :mod:`portrait.validation` judges by. (Listing the printable
    ones, not negating the others, keeps the planes of unassigned code points out of the
    class: Hypothesis builds a strategy for it 6x faster.)"""
    test: Callable[[str], bool] = str.isprintable if kind == "printable" else str.isspace
    parts = []
    for low, high in _runs(test):
        parts.append(_escape(low) if low == high else f"{_escape(low)}-{_escape(high)}")
    return "".join(parts)


def _runs(test: Callable[[str], bool]) -> Iterator[tuple[int, int]]:
    start = None
    for code in range(sys.maxunicode + 2):
        hit = code <= sys.maxunicode and not 0xD800 <= code <= 0xDFFF and test(chr(code))
        if hit and start is None:
            start = code
        elif not hit and start is not None:
            yield start, code - 1
            start = None


def id_schema(max_length: int) -> Schema:
    """An id as :func:`portrait.validation.check_id` takes it."""
    return {"type": "string", "minLength": 1, "maxLength": max_length,
            "pattern": f"^[{_char_class('printable')}]*$"}


def text_schema(max_length: int, *, required: bool) -> Schema:
    """Free text as :func:`portrait.validation.check_text` takes it: no NUL, and with
    ``required`` something besides white space."""
    if not required:
        return {"type": "string", "maxLength": max_length, "pattern": "^[^\\u0000]*$"}
    space = _char_class("space")
    return {"type": "string", "maxLength": max_length, "minLength": 1,
            "pattern": f"^[^\\u0000]*[^\\u0000{space}][^\\u0000]*$"}


def stripped_schema(max_length: int, extra: str = "") -> Schema:
    """A tag: at most ``max_length`` characters once its white space is stripped (a blank
    one is dropped); ``extra`` characters may not occur (the ``|`` of a tag string)."""
    space = _char_class("space")
    edge = f"[^\\u0000{extra}{space}]"
    part = f"[{space}]*(?:{edge}(?:[^\\u0000{extra}]{{0,{max_length - 2}}}{edge})?)?[{space}]*"
    return {"type": "string", "pattern": f"^{part}$"}


def _time_schema(latest: float) -> Schema:
    return {"type": "number", "minimum": 0, "maximum": min(MAX_UNIX_TIME, int(latest)),
            "description": "Unix seconds (UTC); at most the allowed clock skew ahead of now."}


def event_schemas(latest: float) -> list[Schema]:
    """One schema per event type (``portrait.events``): its fields, nothing else.
    ``latest`` is the latest ``occurred_at`` the service takes now."""
    rating = {"type": "number", "minimum": events.MIN_RATING, "maximum": events.MAX_RATING}
    text = text_schema(events.MAX_TEXT_LENGTH, required=True)
    some_id = id_schema(events.MAX_ID_LENGTH)
    item_fields: Schema = {"item_id": some_id, "request_id": {"anyOf": [some_id, {"type": "null"}]}}
    own: dict[str, tuple[Schema, list[str]]] = {
        "rating": ({**item_fields, "rating": rating}, ["item_id", "rating"]),
        "review": ({**item_fields, "text": text,
                    "rating": {"anyOf": [rating, {"type": "null"}]}}, ["item_id", "text"]),
        "search": ({"query": text}, ["query"]),
        "attributes_set": ({"attributes": {
            "type": "object", "minProperties": 1,
            "propertyNames": {"enum": sorted(events.ATTRIBUTE_KEYS)},
            "additionalProperties": text_schema(events.MAX_ATTRIBUTE_LENGTH, required=False),
        }}, ["attributes"]),
    }
    out = []
    for name, cls in events.EVENT_TYPES.items():
        fields, required = own.get(name, (item_fields, ["item_id"]))
        out.append({
            "type": "object", "title": cls.__name__, "description": (cls.__doc__ or "").strip(),
            "properties": {
                "type": {"const": name},
                "schema_version": {"const": cls.SCHEMA_VERSION},
                "event_id": some_id, "user_id": some_id, "occurred_at": _time_schema(latest),
                **fields,
            },
            "required": ["type", "event_id", "user_id", "occurred_at", *required],
            "additionalProperties": False,
        })
    return out


def item_schema() -> Schema:
    """An item as :func:`portrait.catalog.from_dict` takes it (``id`` or ``item_id``)."""
    some_id = id_schema(catalog.MAX_ITEM_ID_LENGTH)
    null = {"type": "null"}
    return {
        "type": "object",
        "properties": {
            "id": some_id, "item_id": some_id,
            "title": text_schema(catalog.MAX_TITLE_LENGTH, required=True),
            "description": {"anyOf": [
                text_schema(catalog.MAX_DESCRIPTION_LENGTH, required=False), null]},
            "tags": {"anyOf": [tags_schema(), tag_string_schema(), null]},
            "attributes": {"anyOf": [attributes_schema(), null]},
            **{key: {"anyOf": [schema, null]} for key, schema in vector_schemas().items()},
        },
        "required": ["title"],
        "oneOf": [{"required": ["id"]}, {"required": ["item_id"]}],
        "additionalProperties": False,
    }


_BASE64 = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def vector_schemas() -> dict[str, Schema]:
    """An item's own vector: its shape here; its width, model, finiteness and non-zero norm
    depend on the active encoder and are said in words (a 422 names the field)."""
    rules = (" Its width must be the active encoder's, `vector_model` its model id, the "
             "numbers finite and not all zero (422 naming the field otherwise).")
    return {
        "vector": {"type": "array", "items": {"type": "number"}, "minItems": 1,
                   "maxItems": catalog.MAX_VECTOR_DIM,
                   "description": "A vector you computed, used instead of encoding the "
                                  "item's text." + rules},
        "vector_b64": {"type": "string", "minLength": 4, "pattern": _BASE64,
                       "maxLength": (catalog.MAX_VECTOR_DIM * 4 + 2) // 3 * 4,
                       "contentEncoding": "base64",
                       "description": "`vector` as base64 of little-endian float32 (give one "
                                      "of the two)." + rules},
        "vector_model": text_schema(catalog.MAX_VECTOR_MODEL_LENGTH, required=True) | {
            "description": "The model that made the vector: the active encoder's model id."},
    }


def tags_schema() -> Schema:
    """Tags as a list: each stripped, blank ones dropped, at most 64 left."""
    return {"type": "array", "items": stripped_schema(catalog.MAX_TAG_LENGTH),
            "description": f"At most {catalog.MAX_TAGS} non-blank tags of at most "
                           f"{catalog.MAX_TAG_LENGTH} characters (blank ones are dropped)."}


def tag_string_schema() -> Schema:
    """Tags as one ``|``-separated string."""
    part = stripped_schema(catalog.MAX_TAG_LENGTH, extra="|")["pattern"][1:-1]
    return {"type": "string", "pattern": f"^{part}(?:\\|{part})*$",
            "description": "Tags separated by `|`."}


def attributes_schema() -> Schema:
    """An item's attributes: JSON scalars by printable key."""
    return {
        "type": "object",
        "propertyNames": id_schema(catalog.MAX_ATTRIBUTE_KEY_LENGTH),
        "additionalProperties": {"anyOf": [
            text_schema(catalog.MAX_ATTRIBUTE_STRING_LENGTH, required=False),
            {"type": "number"}, {"type": "boolean"}]},
    }


# -- the document ------------------------------------------------------------------------------


def install(app: FastAPI, *, max_batch: int, max_future_skew_s: float,
            max_shards: int | None) -> None:
    """Serve :func:`document` as ``app``'s OpenAPI document (built once), with this
    deployment's limits: events or items per request, clock skew, shards a resize may ask."""

    def openapi() -> Schema:
        if app.openapi_schema is None:
            app.openapi_schema = document(app, max_batch=max_batch, max_shards=max_shards,
                                          latest=time.time() + max_future_skew_s)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document(app: FastAPI, *, max_batch: int, latest: float,
             max_shards: int | None = None) -> Schema:
    """FastAPI's document of ``app`` with Portrait's security, statuses and value rules."""
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)  # our 422 is the ErrorBody
    schemas.pop("ValidationError", None)
    schemas["ErrorBody"] = ErrorBody.model_json_schema()
    components["securitySchemes"] = {BEARER: {
        "type": "http", "scheme": "bearer", "description": "A Portrait API token: ptk_…"}}
    doc["security"] = [{BEARER: []}]
    _bodies(schemas, max_batch, latest)
    if max_shards is not None:  # PORTRAIT_SHARDS_MAX, else what the cluster's CPUs can run
        schemas["ResizeRequest"]["properties"]["count"]["maximum"] = max_shards
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            _operation(operation, method, path)
    return doc


def _operation(operation: Schema, method: str, path: str) -> None:
    operation.pop("security", None)  # the document's requirement holds
    if (method, path) in OPEN_ROUTES:
        operation["security"] = []
    responses = operation["responses"]
    responses.pop("422", None)
    for status in ANSWERS.get((method, path), ()):
        responses[str(status)] = _error(status)
    if (method, path) == ("post", "/v1/events"):
        # Per-event outcomes: 207 when some users' batches failed, or the failures' common
        # status (409, 503) with the same body when all did.
        results = {"application/json": {"schema": {"$ref": "#/components/schemas/IngestResponse"}}}
        responses["207"] = {"description": "Some users' events were refused; `results` says which.",
                            "content": results}
        for code in ("409", "503"):
            responses[code]["content"] = {"application/json": {"schema": {"anyOf": [
                {"$ref": "#/components/schemas/ErrorBody"},
                {"$ref": "#/components/schemas/IngestResponse"}]}}}
    for parameter in operation.get("parameters", ()):
        if parameter["name"] == "to_seq":  # a rule across two parameters JSON Schema lacks
            parameter["description"] = "At least `from_seq`; the latest seq when left out."
        if parameter["in"] == "path" and parameter["name"] in ID_PARAMETERS:
            parameter["schema"] = {**parameter["schema"],
                                   **id_schema(ID_PARAMETERS[parameter["name"]])}
            # An id holding "/" (or one that is "." or "..") reaches no route: 404.
            responses.setdefault("404", _error(404))


def _error(status: int) -> Schema:
    return {"description": _MEANING[status],
            "content": {"application/json": {"schema": {"$ref": _ERROR_BODY}}},
            **({"headers": _HEADERS[status]} if status in _HEADERS else {})}


def _bodies(schemas: Schema, max_batch: int, latest: float) -> None:
    """The request bodies' value rules (their pydantic models leave them open)."""
    events_field = schemas["IngestRequest"]["properties"]["events"]
    events_field.update({"items": {"oneOf": event_schemas(latest)}, "maxItems": max_batch})
    items_field = schemas["ItemsRequest"]["properties"]["items"]
    items_field.update({"items": item_schema(), "maxItems": max_batch,
                        "description": items_field.get("description", "")
                        + " Each id once per batch."})
    body = schemas["ItemBody"]["properties"]
    body["title"].update(text_schema(catalog.MAX_TITLE_LENGTH, required=True))
    body["description"].update(text_schema(catalog.MAX_DESCRIPTION_LENGTH, required=False))
    body["tags"].update(tags_schema())
    body["attributes"].update(attributes_schema())
    for key, schema in vector_schemas().items():
        body[key] = {"anyOf": [schema, {"type": "null"}]}
    shown = schemas["ShownRequest"]["properties"]
    shown["user_id"].update(id_schema(events.MAX_ID_LENGTH))
