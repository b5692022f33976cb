"""The errors the client raises: one class per kind of answer, each carrying the API's
``error`` type, ``message`` and, for input errors, the ``field`` to fix."""

from __future__ import annotations

from typing import Any


class PortraitError(Exception):
    """An error answer from the service (or no answer at all: ``status`` 0).

    Attributes:
        status: the HTTP status (0 when the service could not be reached).
        error: the API's error type (``InvalidField``, ``Unauthenticated``...).
        message: what the service said.
        field: the offending field for input errors (``events[3].rating``), else None.
    """

    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{status} {error}: {message}")
        self.status, self.error, self.message, self.field = status, error, message, field


class InvalidRequest(PortraitError):
    """422 or 413: fix ``field`` and send again."""


class Unauthorized(PortraitError):
    """401: no token, or an unknown or revoked one."""


class Forbidden(PortraitError):
    """403: the token lacks the scope."""


class NotFound(PortraitError):
    """404: no such user or item."""


class Gone(NotFound):
    """410: the user was erased, and nothing has been recorded for the id since."""


class Conflict(PortraitError):
    """409: an event id reused for different content."""


class RateLimited(PortraitError):
    """429 after the retries: over the token's allowance."""


class Unavailable(PortraitError):
    """503 after the retries (or the service unreachable): try again later."""


_BY_STATUS: dict[int, type[PortraitError]] = {
    401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 410: Gone, 413: InvalidRequest,
    422: InvalidRequest, 429: RateLimited, 503: Unavailable,
}


def from_response(status: int, body: Any) -> PortraitError:
    """The exception for an error answer (its JSON body, or whatever came)."""
    if not isinstance(body, dict):
        body = {"error": "HTTPError", "message": str(body)[:300]}
    cls = _BY_STATUS.get(status, PortraitError)
    return cls(status, str(body.get("error", "HTTPError")), str(body.get("message", "")),
               body.get("field"))


__all__ = [
    "Conflict", "Forbidden", "Gone", "InvalidRequest", "NotFound", "PortraitError", "RateLimited",
    "Unauthorized", "Unavailable", "from_response",
]
