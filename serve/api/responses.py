"""Response JSON, built in one place from the domain values the shards return.

The recommendation, profile and changes routes return these dicts as ``JSONResponse``
directly: FastAPI re-validating a response model cost ~2 ms on the hot path. The shapes are
the OpenAPI models in :mod:`serve.api.models`; a test checks every builder against them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from actors.shard_service import ProfileReport, Recommendations
from portrait import codec
from portrait.catalog import ItemRecord
from portrait.erasure import ErasureRecord
from portrait.events import RecordedEvent
from portrait.inspection import ProfileDiff
from storage.catalog import UpsertResult

# Every builder takes the caller's user id: with pseudonymised ids, the shards and the log
# know the user by a pseudonym, which the caller must never get back in its place.


def recommendations(out: Recommendations, user_id: str, request_id: str) -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"item_id": r.item_id, "score": round(r.score, 6), "title": r.title,
         "reasons": [{"kind": x.kind, "value": x.value, "weight": x.weight}
                     for x in r.reasons]}
        for r in out.items
    ]
    if out.teams is not None:  # interleaving: which variant contributed each position
        for item, team in zip(items, out.teams, strict=True):
            item["team"] = team
    return {
        "user_id": user_id,
        "request_id": request_id,
        "variant": out.variant,
        "ranker": out.ranker,
        "as_of_seq": out.as_of_seq,
        "items": items,
    }


def profile(report: ProfileReport, user_id: str) -> dict[str, Any]:
    return {**report.summary, "user_id": user_id, "variant": report.variant}


def changes(delta: ProfileDiff, user_id: str) -> dict[str, Any]:
    out = delta.to_dict()
    if "user_id" in out:
        out["user_id"] = user_id
    return out


def audit_page(user_id: str, page: Sequence[RecordedEvent], limit: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "events": [{"seq": r.seq, "position": r.position, "recorded_at": r.recorded_at,
                    "event": {**codec.to_dict(r.event), "user_id": user_id}} for r in page],
        "next_after": page[-1].seq if len(page) == limit else None,
    }


def erasure(record: ErasureRecord, user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, **dataclasses.asdict(record)}


def item(record: ItemRecord) -> dict[str, Any]:
    return {"id": record.item_id, "title": record.title, "description": record.description,
            "tags": list(record.tags), "attributes": dict(record.attributes)}


def upserted(result: UpsertResult, version: int) -> dict[str, Any]:
    return {"inserted": result.inserted, "updated": result.updated,
            "unchanged": result.unchanged, "encoded": result.encoded,
            "catalog_version": version}
