"""API tokens: what a caller may do, and how a presented token is checked.

A token reads ``ptk_<id>_<secret>``: the id (12 hex digits) finds its record, the secret (256
random bits, URL-safe base64) proves it. The store keeps only an HMAC-SHA256 of the secret
under the deployment's secret key, so a copy of the database alone cannot be turned into
working tokens, and the token itself is shown once, when created.

Scopes, one per kind of access (``admin`` grants them all):

* ``events:write`` - ``POST /v1/events``
* ``recommendations:read`` - recommendations, catalog items, the item space's status
* ``profiles:read`` - profiles, their changes and the event audit trail (personal data)
* ``items:write`` - catalog upserts
* ``users:erase`` - erasing a user
* ``metrics:read`` - ``/metrics`` (for the platform's scraper)
* ``admin`` - all of the above, and retraining on demand

Pure: no I/O (``secrets`` only draws random bytes).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from portrait.errors import Forbidden, InvalidField, Unauthenticated

ADMIN = "admin"
SCOPES = (
    "events:write", "recommendations:read", "profiles:read", "items:write", "users:erase",
    "metrics:read", ADMIN,
)
PREFIX = "ptk"
_TOKEN = re.compile(r"ptk_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_KEY_BYTES = 32


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What the store knows of a token (never its secret).

    Attributes:
        token_id: the public part of the token, its key in the store.
        name: unique, chosen by the operator (who or what uses it).
        scopes: what it may do.
        created_at, revoked_at: Unix seconds; ``revoked_at`` None while it is valid.
    """

    token_id: str
    name: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None = None

    def allows(self, scope: str) -> bool:
        return self.revoked_at is None and (scope in self.scopes or ADMIN in self.scopes)


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token as created: ``text`` is shown once and never stored."""

    record: TokenRecord
    text: str
    digest: bytes


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes as a set; raises InvalidField naming an unknown one or none at all."""
    chosen = frozenset(scopes)
    unknown = sorted(chosen - set(SCOPES))
    if unknown:
        raise InvalidField("scope", f"unknown scope {unknown[0]!r}; one of {', '.join(SCOPES)}")
    if not chosen:
        raise InvalidField("scope", "give at least one scope")
    return chosen


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidField("name", "1-64 letters, digits, '.', '_' or '-', starting with a "
                                   "letter or digit")
    return name


def check_key(key: bytes) -> bytes:
    if len(key) < MIN_KEY_BYTES:
        raise InvalidField("secret_key", f"must be at least {MIN_KEY_BYTES} bytes")
    return key


def digest(key: bytes, secret: str) -> bytes:
    """The stored form of a token's secret: HMAC-SHA256 under the deployment's key."""
    return hmac.new(key, secret.encode(), hashlib.sha256).digest()


def new_token(key: bytes, name: str, scopes: Iterable[str], now: float) -> NewToken:
    """A fresh random token and the record and digest to store for it."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 32 bytes = 256 bits, 43 characters
    record = TokenRecord(token_id, check_name(name), check_scopes(scopes), now)
    return NewToken(record, f"{PREFIX}_{token_id}_{secret}", digest(check_key(key), secret))


def parse_authorization(header: str | None) -> tuple[str, str]:
    """``(token_id, secret)`` from an ``Authorization: Bearer ptk_…`` header.

    Raises:
        Unauthenticated: no header, another scheme, or not a Portrait token.
    """
    if not header:
        raise Unauthenticated("send 'Authorization: Bearer <token>' (see `portrait token`)")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated("the Authorization header must use the Bearer scheme")
    match = _TOKEN.fullmatch(value.strip())
    if match is None:
        raise Unauthenticated("the bearer token is not a Portrait token (ptk_…)")
    return match.group(1), match.group(2)


def authorize(
    key: bytes, secret: str, found: tuple[TokenRecord, bytes] | None, scope: str | None
) -> TokenRecord:
    """Check a presented secret against the stored record for its id.

    Args:
        key: the deployment's secret key.
        secret: the secret part of the presented token.
        found: the stored record and digest for its id, or None if there is none.
        scope: what the call needs; None when any valid token will do.

    Raises:
        Unauthenticated: unknown id, wrong secret or revoked (401: the token is no good).
        Forbidden: a good token without the scope (403).
    """
    if found is None or not hmac.compare_digest(digest(key, secret), found[1]):
        raise Unauthenticated("unknown token")
    record = found[0]
    if record.revoked_at is not None:
        raise Unauthenticated("this token was revoked")
    if scope is not None and not record.allows(scope):
        raise Forbidden(f"this token lacks the scope {scope!r}")
    return record




class TokenBucket:
    """A rate limit: ``rate`` units per second with bursts up to ``burst``. Pure: the caller
    passes the time (monotonic seconds)."""

    __slots__ = ("rate", "burst", "_level", "_at")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise InvalidField("rate_limit", "rate must be positive and burst at least 1")
        self.rate, self.burst = rate, burst
        self._level, self._at = burst, now

    def take(self, amount: float, now: float) -> float:
        """Take ``amount`` units if the bucket holds them (or is full): returns 0.0. Else
        takes nothing and returns the seconds until it will. A batch larger than the burst
        goes through from a full bucket and leaves it in debt, so the average holds."""
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        need = min(amount, self.burst)
        if self._level < need:
            return (need - self._level) / self.rate
        self._level -= amount
        return 0.0

__all__ = [
    "ADMIN", "SCOPES", "NewToken", "TokenBucket", "TokenRecord", "authorize", "check_key",
    "check_name", "check_scopes", "digest", "new_token", "parse_authorization",
]
