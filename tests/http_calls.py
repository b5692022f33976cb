"""Request bodies and the documented client behaviour, shared by the HTTP test tiers."""

from __future__ import annotations

import time
from typing import Any

import httpx


def ev(kind: str, eid: str, user: str, t: float, **fields: Any) -> dict[str, Any]:
    """One event as a client sends it in ``POST /v1/events``."""
    return {"type": kind, "event_id": eid, "user_id": user, "occurred_at": t, **fields}


def post_events(
    http: httpx.Client, events: list[dict[str, Any]], retries: int = 20
) -> httpx.Response:
    """POST with the client behaviour we document: retry 503s with the same event_ids."""
    for _ in range(retries):
        resp = http.post("/v1/events", json={"events": events})
        if resp.status_code != 503:
            return resp
        time.sleep(float(resp.headers.get("Retry-After", "1")) / 4)
    return resp


def get_retrying(http: httpx.Client, path: str, retries: int = 40) -> httpx.Response:
    """GET, retrying 503s (a shard restarting or moving) a few times."""
    for _ in range(retries):
        resp = http.get(path)
        if resp.status_code != 503:
            return resp
        time.sleep(0.25)
    return resp
