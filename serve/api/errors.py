"""The one table from Portrait's errors to HTTP statuses, and the error responses.

Every error body is ``{"error", "message", "field"}``: ``error`` is the error's class name,
``field`` names the offending input (``events[3].rating``) where there is one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from portrait.errors import (
    BatchTooLarge,
    EncoderUnavailable,
    EventIdConflict,
    Forbidden,
    InvalidInput,
    NotFound,
    NotReady,
    PayloadTooLarge,
    PortraitError,
    RateLimited,
    ResizeInProgress,
    ShardUnavailable,
    StorageError,
    StorageUnavailable,
    Unauthenticated,
    UnknownUser,
    UserErased,
    VersionConflict,
)
from serve import metrics
from serve.api.context import ApiContext

RETRY_AFTER_S = "2"
_log = logging.getLogger(__name__)

# Most specific first: the first matching class decides.
STATUS: tuple[tuple[type[PortraitError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (RateLimited, 429),
    (PayloadTooLarge, 413),
    (BatchTooLarge, 413),
    (InvalidInput, 422),
    (UserErased, 410),
    (NotFound, 404),
    # Clients never send expected versions: a version conflict means another writer had the
    # user's stream (a shard hand-off) even after the host reloaded it once. Nothing was
    # written; retrying is right, so it is a 503, not the 409 that says "do not retry".
    (VersionConflict, 503),
    (EventIdConflict, 409),
    (ResizeInProgress, 409),
    (StorageUnavailable, 503),
    (EncoderUnavailable, 503),
    (ShardUnavailable, 503),
    (NotReady, 503),
)

# What a client is told for errors whose own message is about our internals.
_PUBLIC_MESSAGE = {
    StorageUnavailable: "the event store is unreachable; retry later",
    StorageError: "the event store failed; the server log has the details",
    EncoderUnavailable: "the text encoder is unavailable; retry later",
    ShardUnavailable: "a shard is restarting or moving; retry later",
    NotReady: "the service is still starting; retry later",
    VersionConflict: "the user's events are being written elsewhere; retry later",
}


def public_reason(exc: BaseException) -> str:
    """What a client may be told about a failure that is not its fault: our own message for
    Portrait's errors, a fixed phrase otherwise; driver text (SQL, parameters, hosts) stays in
    the server's log."""
    if isinstance(exc, PortraitError):
        return str(error_body(exc)["message"])
    if isinstance(exc, TimeoutError):
        return "still starting (timed out waiting for the store, catalog or shards)"
    _log.warning("not ready: %s", type(exc).__name__, exc_info=exc)
    return f"internal error ({type(exc).__name__}); see the server log"


def error_name(exc: PortraitError) -> str:
    """The name a client sees for ``exc``: the Portrait error class it is. An error raised
    in a Ray actor reaches its caller as an instance of a class Ray makes on the fly,
    ``RayTaskError(ShardUnavailable)``, a subclass of both; that name is Ray's, not ours."""
    cls = next(c for c in type(exc).__mro__ if issubclass(c, PortraitError)
               and c.__module__.split(".")[0] != "ray")
    return cls.__name__


def status_of(exc: PortraitError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: PortraitError, prefix: str = "") -> dict[str, Any]:
    """The JSON body for ``exc``; ``prefix`` places its field inside a request
    (``events[3].``)."""
    field = getattr(exc, "field", None)
    if field is not None:
        field = f"{prefix}{field}"
    if isinstance(exc, InvalidInput):
        message = f"{field}: {exc.reason}"
    else:
        message = next(
            (m for cls, m in _PUBLIC_MESSAGE.items() if isinstance(exc, cls)), str(exc)
        )
    return {"error": error_name(exc), "message": message,
            **({"field": field} if field else {})}


def retry_headers(status: int, exc: PortraitError | None = None) -> dict[str, str] | None:
    if status == 503:
        return {"Retry-After": RETRY_AFTER_S}
    if isinstance(exc, RateLimited):
        return {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="portrait"'}
    return None


class InRequest(Exception):
    """A Portrait error about one part of a request (``events[3].``)."""

    def __init__(self, error: PortraitError, prefix: str) -> None:
        super().__init__(str(error))
        self.error = error
        self.prefix = prefix


def error_response(exc: PortraitError, prefix: str = "") -> JSONResponse:
    status = status_of(exc)
    count(status, error_name(exc), exc)
    return JSONResponse(error_body(exc, prefix), status, headers=retry_headers(status, exc))


async def unknown_user(ctx: ApiContext, user_id: str) -> PortraitError:
    """The error for an id with nothing recorded: 410 if it was erased, else 404."""
    erased = await ctx.stores.eraser.last_erasure(ctx.internal(user_id))
    return UnknownUser(user_id) if erased is None else UserErased(user_id, erased.erased_at)


def count(
    status: int, error: str, exc: BaseException | None = None, *, unexpected: bool = False
) -> None:
    """One error answer in ``portrait_api_errors_total``; a server-side failure (5xx) is also
    logged, once, with the error's own text (the engines hide SQL parameters, so no
    request data) but never to the client; an ``unexpected`` one (a bug) with its
    traceback."""
    metrics.ERRORS.labels(status=str(status), error=error).inc()
    if unexpected:
        _log.error("answered %d: unhandled %s", status, error, exc_info=exc)
    elif status >= 500:
        _log.warning("answered %d: %s: %s", status, error, exc if exc is not None else "")


_STARLETTE_ERRORS = {404: "NotFound", 405: "MethodNotAllowed"}


def validation_field(error: Mapping[str, Any]) -> tuple[str, str]:
    """The field a FastAPI validation error names, the way Portrait names fields
    (``events[3].rating``), and its message. A body that is not JSON names ``body`` (FastAPI
    puts the byte offset where the field goes)."""
    msg = str(error.get("msg", "invalid"))
    if error.get("type") == "json_invalid":
        where = error.get("loc", ("body", 0))[-1]
        reason = (error.get("ctx") or {}).get("error", msg)
        return "body", f"not valid JSON ({reason} at character {where})"
    field = ""
    for part in error.get("loc", ()):
        if isinstance(part, int):
            field += f"[{part}]"
        elif part not in ("body", "query", "path") or field:
            field += f".{part}" if field else str(part)
    return field or "body", msg


def invalid_field(field: str, message: str) -> JSONResponse:
    """A 422 ``InvalidField`` for input that FastAPI itself refused."""
    count(422, "InvalidField")
    return JSONResponse({"error": "InvalidField", "message": f"{field}: {message}",
                         "field": field}, 422)


def install(app: FastAPI) -> None:
    """Map Portrait's errors and FastAPI's own validation errors onto ``app``."""

    @app.exception_handler(PortraitError)
    async def _portrait(_: Request, exc: PortraitError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(InRequest)
    async def _in_request(_: Request, exc: InRequest) -> JSONResponse:
        return error_response(exc.error, exc.prefix)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field, message = validation_field(first)
        return invalid_field(field, message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's one 400: a body it could not read as text (not UTF-8), where a body
            # that is not JSON is a 422 naming ``body``; a client sees the same for both.
            return invalid_field("body", "not valid JSON (not UTF-8 text)")
        # Starlette's own answers (no such route, a method the route lacks), in our shape.
        name = _STARLETTE_ERRORS.get(exc.status_code, "HTTPError")
        count(exc.status_code, name)
        return JSONResponse({"error": name, "message": str(exc.detail)}, exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug or an unmapped failure of a dependency. Logged with its traceback (the
        # message of a driver error may hold data, so only the type goes to the client), and
        # answered in the API's error shape instead of Starlette's bare text.
        count(500, type(exc).__name__, exc, unexpected=True)
        return JSONResponse({"error": "InternalError",
                             "message": f"internal error ({type(exc).__name__}); "
                                        "see the server log"}, 500)
