"""What an erasure leaves behind for audit: who asked, when, what was removed, and a hash of
the erased user id (never the id).

Pure: the standard library only.

The hash is SHA-256 of the id as stored, unkeyed, so that an auditor who is given an id can
check whether and when it was erased; it cannot be reversed except by guessing ids. Where ids
are guessable (sequential numbers, e-mail addresses), turn on pseudonymisation
(``PORTRAIT_PSEUDONYMIZE``): then the stored id is already a keyed hash.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def user_hash(user_id: str) -> str:
    """The erasure record's name for a user id: hex SHA-256 of the id as stored."""
    return hashlib.sha256(user_id.encode()).hexdigest()


@dataclass(frozen=True)
class ErasureRecord:
    """One erasure.

    Attributes:
        erasure_id: its number, in the order erasures happened.
        user_hash: :func:`user_hash` of the erased id.
        requested_by: the name of the API token (or the operator) that asked.
        erased_at: Unix seconds.
        events: log rows left sealed under the destroyed key (and detached from the id).
        snapshots: snapshots deleted.
        text_features: cached text features deleted.
    """

    erasure_id: int
    user_hash: str
    requested_by: str
    erased_at: float
    events: int
    snapshots: int
    text_features: int


__all__ = ["ErasureRecord", "user_hash"]
