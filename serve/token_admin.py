"""Creating, listing and revoking API tokens (``portrait token``), and the local run's own.

``portrait run`` keeps one admin token for the local developer in ``<data_dir>/dev-token``
(mode 0600, beside the database files it grants access to): it is printed with the curl
examples on every start and reused while the store still accepts it. Every other token is
shown once, when created, and only its keyed digest is stored.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

from portrait.access import ADMIN, NewToken, authorize, new_token, parse_authorization
from portrait.errors import PortraitError
from portrait.ports import TokenStore


async def create_token(
    tokens: TokenStore, key: bytes, name: str, scopes: list[str]
) -> NewToken:
    """A new token, stored (its digest); raises InvalidField for a bad name or scope."""
    token = new_token(key, name, scopes, time.time())
    await tokens.create(token.record, token.digest)
    return token


async def dev_token(tokens: TokenStore, key: bytes, path: Path) -> str:
    """The local admin token kept in ``path``: the stored one while it is still valid,
    otherwise a new one (first run, revoked, a new database or a new key)."""
    try:
        text = path.read_text().strip()
        token_id, secret = parse_authorization(f"Bearer {text}")
        authorize(key, secret, await tokens.find(token_id), ADMIN)
        return text
    except (OSError, PortraitError):
        pass  # none kept, or no longer accepted: make a new one
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    token = await create_token(tokens, key, f"local-dev-{stamp}", [ADMIN])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token.text + "\n")
    tmp.replace(path)
    return token.text


__all__ = ["create_token", "dev_token"]
