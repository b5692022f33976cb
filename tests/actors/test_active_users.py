"""The active-user set: byte accounting, idle selection, LRU eviction under a budget."""

from __future__ import annotations

from actors.active_users import ActiveUsers, state_bytes
from portrait.profile import ProfileState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def profile(user_id: str, tags: int = 0) -> ProfileState:
    state = ProfileState(user_id, 8)
    state.tags = {f"tag{i}": 1.0 for i in range(tags)}
    return state


def test_bytes_follow_adds_resizes_replacements_and_drops() -> None:
    users = ActiveUsers(Clock())
    a, b = profile("a"), profile("b", tags=3)
    users.add("a", a, 0)
    users.add("b", b, 0)
    assert users.nbytes == state_bytes(a) + state_bytes(b) and len(users) == 2

    a.tags = {f"t{i}": 1.0 for i in range(40)}  # the fold grows a profile in place
    users.resize("a")
    assert users.nbytes == state_bytes(a) + state_bytes(b)

    replacement = profile("b")
    users.add("b", replacement, 7)  # re-activation replaces, never double counts
    entry = users.get("b")
    assert entry is not None and entry.state is replacement and entry.snapshot_seq == 7
    assert users.nbytes == state_bytes(a) + state_bytes(replacement)

    dropped = users.drop("a")
    assert dropped is not None and dropped.state is a
    assert users.drop("a") is None
    assert users.nbytes == state_bytes(replacement) and "a" not in users and "b" in users
    users.drop("b")
    assert users.nbytes == 0 and len(users) == 0


def test_idle_users_are_those_unused_past_the_timeout_least_recent_first() -> None:
    clock = Clock()
    users = ActiveUsers(clock)
    for at, user_id in ((0, "a"), (10, "b"), (20, "c")):
        clock.now = at
        users.add(user_id, profile(user_id), 0)
    clock.now = 25
    users.touch("a")
    clock.now = 40
    assert users.idle(15) == ["b", "c"]  # "a" was used exactly 15 s ago: not past it
    assert users.idle(100) == []
    assert users.idle(0) == ["b", "c", "a"]


def test_evictions_take_the_least_recently_used_until_within_budget() -> None:
    users = ActiveUsers(Clock())
    for user_id in "abcd":
        users.add(user_id, profile(user_id), 0)
    size = state_bytes(profile("x"))
    users.touch("a")  # use order now: b, c, d, a
    assert list(users) == ["b", "c", "d", "a"]
    assert users.evictions(4 * size) == []
    assert users.evictions(4 * size - 1) == ["b"]
    assert users.evictions(2 * size) == ["b", "c"]
    # The most recently used user stays while it fits the budget on its own.
    assert users.evictions(size) == ["b", "c", "d"]
    assert users.evictions(size) == ["b", "c", "d"]  # a query: nothing was dropped
    assert len(users) == 4


def test_a_user_larger_than_the_whole_budget_is_evicted_even_when_last_used() -> None:
    """It used to stay forever as the most recently used: one oversized profile held the
    host above its budget."""
    users = ActiveUsers(Clock())
    users.add("small", profile("small"), 0)
    users.add("huge", profile("huge", tags=500), 0)
    budget = state_bytes(profile("huge", tags=100))
    assert users.evictions(budget) == ["small", "huge"]
    users.drop("small")
    assert users.evictions(budget) == ["huge"]
    assert users.evictions(state_bytes(profile("huge", tags=500))) == []


def test_a_large_user_frees_more_than_its_share() -> None:
    users = ActiveUsers(Clock())
    users.add("big", profile("big", tags=200), 0)
    users.add("s1", profile("s1"), 0)
    users.add("s2", profile("s2"), 0)
    small = state_bytes(profile("x"))
    assert users.evictions(2 * small) == ["big"]
