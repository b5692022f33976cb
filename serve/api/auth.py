"""Token checks in the ingress: every route but the liveness and readiness probes names the
scope it needs (:mod:`portrait.access`), and a FastAPI dependency checks the caller's token.

A token's record is read from the store once and trusted for ``cache_s`` seconds (a
revocation takes effect within that), so the per-request cost is a dict lookup and one
HMAC-SHA256 of 43 bytes. Unknown token ids are cached too (as absent): a client sending
made-up tokens costs the database one read per id per ``cache_s``, and the cache is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from portrait.access import TokenBucket, TokenRecord, authorize, parse_authorization
from portrait.errors import RateLimited
from portrait.ports import TokenStore

MAX_CACHED = 10_000

# Declares the scheme in the OpenAPI document; the check itself is ours (auto_error=False).
_bearer = HTTPBearer(auto_error=False, description="a Portrait API token: ptk_…")


class Authenticator:
    """Checks bearer tokens against the store, with a short-lived cache."""

    def __init__(
        self,
        tokens: TokenStore,
        key: bytes,
        *,
        cache_s: float = 5.0,
        requests_per_s: float = 0.0,
        events_per_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = tokens
        self._key = key
        self._cache_s = cache_s
        self._clock = clock
        self._cache: dict[str, tuple[float, tuple[TokenRecord, bytes] | None]] = {}
        # Per token and per replica (N ingress replicas allow N times as much). 0: no limit.
        self._limits = {"requests": requests_per_s, "events": events_per_s}
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    async def check(self, authorization: str | None, scope: str | None) -> TokenRecord:
        """The caller's token record if it may do ``scope`` (None: any valid token).

        Raises:
            Unauthenticated: 401. Forbidden: 403.
        """
        token_id, secret = parse_authorization(authorization)
        now = self._clock()
        cached = self._cache.get(token_id)
        if cached is None or cached[0] <= now:
            found = await self._tokens.find(token_id)
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()  # rare; the next requests re-read their tokens
            self._cache[token_id] = (now + self._cache_s, found)
        else:
            found = cached[1]
        record = authorize(self._key, secret, found, scope)
        self.charge(record, "requests", 1, now)
        return record

    def charge(self, record: TokenRecord, what: str, amount: float, now: float | None = None,
               ) -> None:
        """Take ``amount`` of the token's allowance of ``what`` ("requests", "events").

        Raises:
            RateLimited: 429, with the seconds until the allowance is there again.
        """
        rate = self._limits[what]
        if rate <= 0:
            return
        now = self._clock() if now is None else now
        bucket = self._buckets.get((record.token_id, what))
        if bucket is None:
            if len(self._buckets) >= MAX_CACHED:
                self._buckets.clear()
            # Two seconds' worth of burst: a client may catch up after a pause.
            bucket = self._buckets[(record.token_id, what)] = TokenBucket(
                rate, max(1.0, 2 * rate), now)
        wait = bucket.take(amount, now)
        if wait > 0:
            raise RateLimited(f"token {record.name!r} is over its {what} per second "
                              f"({rate:g}); retry in {wait:.1f} s", wait)


def requires(scope: str | None) -> Any:
    """A route dependency: the caller's token must allow ``scope`` (None: any valid token).
    Nothing is checked when the service runs with ``PORTRAIT_AUTH=off``."""

    async def dependency(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    ) -> None:
        auth: Authenticator | None = request.app.state.portrait.auth
        if auth is not None:
            request.state.token = await auth.check(request.headers.get("authorization"), scope)

    return Depends(dependency)

__all__ = ["Authenticator", "requires"]
