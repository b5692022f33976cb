"""Pseudonymised user ids: the log holds a keyed hash of each external user id, never the id.

``p:`` + the first 32 hex digits (128 bits) of HMAC-SHA256 of the id, under a key derived from
the deployment's secret key for this one purpose (so it is not the key token digests use).
The same id always maps to the same pseudonym; without the key, the pseudonym says nothing
about the id. What it costs: no reverse lookup (the service can answer for an id it is given,
but cannot list or export its users' external ids), and a new secret key orphans every profile
(their events stay under the old pseudonyms).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

PREFIX = "p:"
_PURPOSE = b"portrait user-id pseudonyms v1"


def pseudonymizer(secret_key: bytes) -> Callable[[str], str]:
    """The mapping external id -> pseudonym under ``secret_key``."""
    derived = hmac.new(secret_key, _PURPOSE, hashlib.sha256).digest()

    def pseudonym(user_id: str) -> str:
        return PREFIX + hmac.new(derived, user_id.encode(), hashlib.sha256).hexdigest()[:32]

    return pseudonym


__all__ = ["PREFIX", "pseudonymizer"]
