"""Tokens: format, digest, checks; the rate-limit bucket."""

from __future__ import annotations

import pytest

from portrait.access import (
    TokenBucket,
    authorize,
    check_scopes,
    new_token,
    parse_authorization,
)
from portrait.errors import Forbidden, InvalidField, Unauthenticated

KEY = b"k" * 32


def test_a_new_token_parses_back_and_only_its_digest_is_kept() -> None:
    token = new_token(KEY, "app", ["events:write"], 100.0)
    token_id, secret = parse_authorization(f"Bearer {token.text}")
    assert token_id == token.record.token_id and len(secret) == 43  # 256 bits
    assert secret.encode() not in token.digest and token.text not in repr(token.record)
    found = (token.record, token.digest)
    assert authorize(KEY, secret, found, "events:write") == token.record
    with pytest.raises(Forbidden, match="profiles:read"):
        authorize(KEY, secret, found, "profiles:read")
    with pytest.raises(Unauthenticated):
        authorize(b"another key, also 32 bytes long!!", secret, found, "events:write")
    with pytest.raises(Unauthenticated):
        authorize(KEY, secret, None, None)
    admin = new_token(KEY, "ops", ["admin"], 100.0)
    assert admin.record.allows("users:erase") and not token.record.allows("admin")


def test_names_scopes_and_headers_are_checked() -> None:
    with pytest.raises(InvalidField, match="scope"):
        check_scopes(["events:write", "everything"])
    with pytest.raises(InvalidField, match="scope"):
        check_scopes([])
    with pytest.raises(InvalidField, match="name"):
        new_token(KEY, "has space", ["admin"], 0.0)
    with pytest.raises(InvalidField, match="secret_key"):
        new_token(b"short", "x", ["admin"], 0.0)
    for header in (None, "", "Basic abc", "Bearer ", "Bearer ptk_xyz_abc"):
        with pytest.raises(Unauthenticated):
            parse_authorization(header)


def test_the_bucket_allows_bursts_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert all(bucket.take(1, 0.0) == 0.0 for _ in range(20))
    assert bucket.take(1, 0.0) == pytest.approx(0.1)  # empty: one unit per 0.1 s
    assert bucket.take(1, 0.1) == 0.0
    assert bucket.take(5, 0.2) == pytest.approx(0.4)  # refused whole, nothing taken
    assert bucket.take(1, 0.2) == 0.0


def test_a_batch_larger_than_the_burst_goes_from_a_full_bucket_into_debt() -> None:
    bucket = TokenBucket(rate=10, burst=20, now=0.0)
    assert bucket.take(50, 0.0) == 0.0  # full: through, 30 units in debt
    assert bucket.take(1, 1.0) == pytest.approx(2.1)  # -30 + 10 = -20; needs 1
    assert bucket.take(1, 3.1) == 0.0
