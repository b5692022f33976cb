"""Portrait's Python client, sync and async; needs only httpx (see portrait_client.client)."""

from portrait_client.client import (
    AsyncClient,
    Client,
    EventResult,
    Recommendation,
    Recommendations,
    SendSummary,
    event,
    vector_b64,
)
from portrait_client.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PortraitError,
    RateLimited,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "AsyncClient", "Client", "Conflict", "EventResult", "Forbidden", "InvalidRequest",
    "NotFound", "PortraitError", "RateLimited", "Recommendation", "Recommendations",
    "SendSummary", "Unauthorized", "Unavailable", "event", "vector_b64",
]
