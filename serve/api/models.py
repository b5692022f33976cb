"""Request and response bodies of the HTTP API (OpenAPI schemas).

Event fields are validated by the domain codec, not by pydantic, so that every error names
the field the way the rest of Portrait does (``events[3].rating``) and the API accepts exactly
what the log stores.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class IngestRequest(BaseModel):
    events: list[dict[str, Any]] = Field(
        ...,
        description=(
            "Behaviour events. Each has `type` (view, click, add_to_cart, purchase, dismiss, "
            "rating, review, search, attributes_set), `event_id` (your idempotency key), "
            "`user_id`, `occurred_at` (Unix seconds) and the type's fields."
        ),
        examples=[[{"type": "rating", "event_id": "e-1", "user_id": "42",
                    "occurred_at": 1700000000, "item_id": "1", "rating": 4.5}]],
    )


class EventResult(BaseModel):
    event_id: str
    user_id: str
    seq: int | None = None
    position: int | None = None
    duplicate: bool | None = None
    error: str | None = None
    field: str | None = None
    message: str | None = None


class IngestResponse(BaseModel):
    results: list[EventResult]


_VECTOR = ("A vector you computed for the item, used instead of encoding its text: as many "
           "numbers as the item space is wide, made by `vector_model`. Stored L2-normalised.")
_VECTOR_B64 = "`vector` as base64 of little-endian float32 (compact, for bulk loads)."
_VECTOR_MODEL = ("The model that made the vector: must be the active encoder's model id (the "
                 "one that encodes users' texts), else 422.")


class ItemBody(BaseModel):
    title: str
    description: str = ""
    tags: list[str] = []
    attributes: dict[str, Any] = {}
    # Any: the domain checks these, so errors name the field as everywhere else.
    vector: Any = Field(None, description=_VECTOR)
    vector_b64: Any = Field(None, description=_VECTOR_B64)
    vector_model: Any = Field(None, description=_VECTOR_MODEL)


class ItemsRequest(BaseModel):
    items: list[dict[str, Any]] = Field(
        ..., description=(
            "Items: `id`, `title`, optional `description`, `tags`, `attributes`; optionally "
            "a precomputed vector: `vector` (numbers) or `vector_b64` (base64 of "
            "little-endian float32), with `vector_model`, the active encoder's model id. "
            "One malformed item refuses the whole batch (422 naming `items[i].<field>`)."),
        examples=[[{"id": "sku-1", "title": "Trail shoe", "tags": ["running"],
                    "vector_b64": "AACAPwAAAAA=",
                    "vector_model": "sentence-transformers/all-MiniLM-L6-v2"}]],
    )


class UpsertResponse(BaseModel):
    inserted: int
    updated: int
    unchanged: int
    encoded: int = Field(..., description="Items whose text the service encoded.")
    given: int = Field(0, description="Items stored with the vector they brought.")
    catalog_version: int


class Reason(BaseModel):
    kind: str = Field(..., description="What the item was recommended for: `similar_to` (a "
                      "recent item, `value` its id), `interest` (a tag), `keyword` (a word of "
                      "the user's reviews and searches), `popular`.")
    value: str
    weight: float


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    title: str | None = None
    reasons: list[Reason]
    team: str | None = Field(None, description="Interleaving experiments: the variant that "
                             "contributed this position.")


class RecommendationsResponse(BaseModel):
    user_id: str
    request_id: str = Field(..., description="This response's id: send it as `request_id` "
                            "on the events it leads to, and to /v1/impressions/{id}/shown.")
    variant: str = Field(..., description="The A/B variant that produced this ranking.")
    ranker: str = Field(..., description="Which ranker ordered the list: `blend` (the linear "
                        "blend: before a learned ranker exists, and for a user without "
                        "history) or `learned:<item space version>` (the learned ranker "
                        "trained with that item space); under interleaving, both variants' "
                        "joined by `+` when they differ.")
    as_of_seq: int
    items: list[RecommendedItem]


class AuditEvent(BaseModel):
    seq: int
    position: int
    recorded_at: float
    event: dict[str, Any]


class AuditPage(BaseModel):
    user_id: str
    events: list[AuditEvent]
    next_after: int | None = Field(None, description="Pass as `after` for the next page.")


class ShardLoadModel(BaseModel):
    name: str
    active_users: int
    pending_events: int
    calls_in_flight: int


class ShardsResponse(BaseModel):
    epoch: int = Field(description="Each change of the shard set is a new epoch.")
    shards: list[ShardLoadModel]


class ResizeRequest(BaseModel):
    count: int = Field(ge=1, le=1024, description="The number of shards wanted.")


class ResizeResponse(BaseModel):
    epoch: int
    shards: list[str]
    moved: float = Field(description="Expected share of users that changed shard.")
    seconds: float = Field(description="How long the hand-off took.")


class ErasureResponse(BaseModel):
    user_id: str
    erasure_id: int
    user_hash: str = Field(description="SHA-256 of the id as stored: what the record keeps.")
    erased_at: float = Field(description="Unix seconds.")
    events: int = Field(description="Log rows left sealed under the destroyed key.")
    snapshots: int
    text_features: int


class ErrorBody(BaseModel):
    error: str
    message: str
    field: str | None = None


class WeightedTag(BaseModel):
    tag: str
    weight: float


class WeightedKeyword(BaseModel):
    keyword: str
    weight: float


class InferredTag(BaseModel):
    tag: str
    score: float


class RecentItem(BaseModel):
    item_id: str
    type: str
    occurred_at: float
    event_id: str


class ProfileResponse(BaseModel):
    user_id: str
    variant: str
    last_seq: int
    event_count: int
    as_of: float | None
    attributes: dict[str, str]
    counts: dict[str, int]
    tags: list[WeightedTag]
    keywords: list[WeightedKeyword]
    inferred_tags: list[InferredTag]
    recent: list[RecentItem]
    excluded_count: int
    long_norm: float
    short_norm: float


class InterestChange(BaseModel):
    kind: str
    name: str
    before: float
    after: float
    delta: float


class ChangesResponse(BaseModel):
    from_seq: int
    to_seq: int
    events_between: int
    rose: list[InterestChange]
    fell: list[InterestChange]
    long_similarity: float
    short_similarity: float
    count_changes: dict[str, int]


class ItemResponse(BaseModel):
    id: str
    title: str
    description: str
    tags: list[str]
    attributes: dict[str, Any]


class ShownRequest(BaseModel):
    user_id: str = Field(..., description="The user the list was served to.")
    item_ids: list[str] = Field(..., description="The served items the client displayed.")


class ShownResponse(BaseModel):
    request_id: str
    shown: int
