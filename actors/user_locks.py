"""One lock per user, so that each user has one writer at a time in a shard process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class _Waiters:
    __slots__ = ("lock", "count")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.count = 0  # holders and waiters


class UserLocks:
    """One lock per user, kept only while someone holds or waits for it.

    Dropping a lock that merely looks free is not safe: right after a release, a woken waiter
    has not taken it yet, and a newcomer given a fresh lock would run beside that waiter.
    Counting holders and waiters makes the entry's removal exact.
    """

    def __init__(self) -> None:
        self._entries: dict[str, _Waiters] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user_ids: Iterable[str]) -> AsyncIterator[None]:
        """Hold every user's lock, taken in sorted order so that two callers with
        overlapping users cannot deadlock."""
        ids = sorted(set(user_ids))
        entries = []
        for user_id in ids:
            entry = self._entries.get(user_id)
            if entry is None:
                entry = self._entries[user_id] = _Waiters()
            entry.count += 1
            entries.append(entry)
        held: list[asyncio.Lock] = []
        try:
            for entry in entries:
                await entry.lock.acquire()
                held.append(entry.lock)
            yield
        finally:
            for lock in held:
                lock.release()
            for user_id, entry in zip(ids, entries, strict=True):
                entry.count -= 1
                if entry.count == 0:
                    del self._entries[user_id]
