"""The active-user set of one host: the profiles it keeps in memory, and which to let go.

A user is *passivated* (dropped from memory) when idle for longer than a timeout, or when the
host is over its memory budget, least recently used first. This module only keeps the
bookkeeping that decides that: LRU order, last use, and an estimate of each profile's size and
of their total. Writing the snapshot and taking the user's lock are the host's business.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator

from portrait.profile import ProfileState


def state_bytes(state: ProfileState) -> int:
    """Approximate resident size of a profile, in O(1) (it runs on every ingest): the
    containers' own sizes plus a per-entry estimate of what they hold (a key string and its
    float ~95 B, an item id ~56 B, a recent-item tuple with its strings ~150 B)."""
    # Per-item weights: two float64 columns and a dict entry per item id (the ids are
    # interned, shared by every user of the process; slot numbers above 256 are int objects
    # of their own, 28 B). The text accumulators exist only for users who wrote a review or
    # a search.
    return (
        state.item_weights.nbytes + 400
        + (0 if state.text_acc is None else state.text_acc.nbytes)
        + sys.getsizeof(state.item_slots) + 28 * max(0, len(state.item_slots) - 256)
        + sys.getsizeof(state.tags) + 95 * len(state.tags)
        + sys.getsizeof(state.keywords) + 95 * len(state.keywords)
        + sys.getsizeof(state.excluded) + 56 * len(state.excluded)
        + sys.getsizeof(state.recent) + 150 * len(state.recent)
        + 200 * (len(state.counts) + len(state.attributes))
    )


class ActiveUser:
    """One user held in memory.

    Attributes:
        state: the profile, folded up to the last acknowledged event; owned by the host.
        snapshot_seq: the seq of the newest snapshot known to be stored (0 for none).
        last_used: the clock's reading at the user's last use.
        size: :func:`state_bytes` of ``state`` when last measured.
    """

    __slots__ = ("state", "snapshot_seq", "last_used", "size")

    def __init__(self, state: ProfileState, snapshot_seq: int, now: float) -> None:
        self.state = state
        self.snapshot_seq = snapshot_seq
        self.last_used = now
        self.size = state_bytes(state)


class ActiveUsers:
    """The users one host keeps in memory, in least-recently-used order.

    Not thread-safe, and no locking of its own: every method is synchronous, so on one
    event loop none interleaves with another.

    Args:
        clock: monotonic seconds, read on every use; injectable for tests.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._users: OrderedDict[str, ActiveUser] = OrderedDict()  # oldest use first
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._users)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._users

    def __iter__(self) -> Iterator[str]:
        """The user ids, least recently used first."""
        return iter(self._users)

    @property
    def nbytes(self) -> int:
        """The estimated memory of every active profile together."""
        return self._bytes

    def get(self, user_id: str) -> ActiveUser | None:
        """The user's entry, or None if not active. Does not count as a use."""
        return self._users.get(user_id)

    def items(self) -> list[tuple[str, ActiveUser]]:
        """Every (user id, entry), least recently used first (a copy, safe to iterate while
        the set changes)."""
        return list(self._users.items())

    def add(self, user_id: str, state: ProfileState, snapshot_seq: int) -> ActiveUser:
        """Make ``state`` the user's active profile, as the most recently used.

        Args:
            user_id: the user; an entry they already had is replaced.
            state: their profile.
            snapshot_seq: the seq of the stored snapshot ``state`` was built from (0: none).

        Returns:
            The new entry.
        """
        self.drop(user_id)
        user = self._users[user_id] = ActiveUser(state, snapshot_seq, self._clock())
        self._bytes += user.size
        return user

    def touch(self, user_id: str) -> None:
        """Record a use of an active user now (moves them to the young end)."""
        user = self._users[user_id]
        user.last_used = self._clock()
        self._users.move_to_end(user_id)

    def resize(self, user_id: str) -> None:
        """Re-measure an active user's profile after it changed."""
        user = self._users[user_id]
        new_size = state_bytes(user.state)
        self._bytes += new_size - user.size
        user.size = new_size

    def drop(self, user_id: str) -> ActiveUser | None:
        """Forget the user (nothing is written); their entry, or None if not active."""
        user = self._users.pop(user_id, None)
        if user is not None:
            self._bytes -= user.size
        return user

    def idle(self, timeout_s: float) -> list[str]:
        """The users not used for more than ``timeout_s`` seconds, least recent first."""
        cutoff = self._clock() - timeout_s
        # LRU order is last-use order, so the idle users are a prefix of it.
        idle = []
        for user_id, user in self._users.items():
            if user.last_used >= cutoff:
                break
            idle.append(user_id)
        return idle

    def evictions(self, budget_bytes: int) -> list[str]:
        """The least recently used users whose removal brings the total within
        ``budget_bytes``, least recent first; empty when already within it.

        The most recently used user stays while the others can make room (a host that evicts
        the profile it has just loaded would thrash), unless that user alone is larger than
        the whole budget: then they go too, and pay a reload on each use, so that one
        oversized profile cannot hold a host above its budget for good.
        """
        excess = self._bytes - budget_bytes
        victims: list[str] = []
        for user_id, user in self._users.items():
            if excess <= 0:
                break
            if len(victims) == len(self._users) - 1 and user.size <= budget_bytes:
                break
            victims.append(user_id)
            excess -= user.size
        return victims


__all__ = ["ActiveUser", "ActiveUsers", "state_bytes"]
