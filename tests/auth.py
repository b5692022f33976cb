"""Tokens for tests that call the API: in-process systems check tokens like the service."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from portrait.access import ADMIN
from serve.composition import InProcessSystem, in_process
from serve.settings import Settings
from serve.token_admin import create_token

TEST_KEY = b"portrait tests' secret key, 32+ bytes long"
_names = itertools.count()


def system(settings: Settings, url: str, encoder: Any) -> InProcessSystem:
    """:func:`in_process` with tokens checked under :data:`TEST_KEY`."""
    return in_process(settings, url, encoder, secret_key=TEST_KEY)


async def headers(system: InProcessSystem, scopes: Sequence[str] = (ADMIN,)) -> dict[str, str]:
    """An ``Authorization`` header with a new token of ``scopes`` in the system's store."""
    token = await create_token(system.context.stores.tokens, TEST_KEY, f"test-{next(_names)}",
                               list(scopes))
    return {"authorization": f"Bearer {token.text}"}
