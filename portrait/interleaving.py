"""Team-draft interleaving of two ranked lists (Radlinski, Kurup and Joachims, 2008).

Pure: the standard library only, no I/O.

Two "teams" (variants) take turns picking their best item not yet picked; whichever team has
fewer picks goes next, and a fair coin decides when they are even. Every position records
the team that contributed it, so a user's interaction with an item credits that team.
Because each team's picks are its own top items and the order of turns is random, a user
with no preference credits both teams equally in expectation, and a preferred ranker wins
more interactions: the comparison is within one user and one list, which is why it needs far
fewer users than splitting them between variants.

The coin is drawn from a seed (the request id), so the same request always gets the same
list, in any process.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence


def seed_of(text: str) -> int:
    """A stable 64-bit seed from a string (Python's ``hash`` is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def team_draft(
    ranked_a: Sequence[str], ranked_b: Sequence[str], k: int, *, team_a: str, team_b: str,
    seed: int,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The interleaved top ``k`` and, per position, the team that picked it.

    Stops early when both lists are exhausted. A team whose list has run out passes its turn.
    """
    rng = random.Random(seed)
    picked: list[str] = []
    teams: list[str] = []
    taken: set[str] = set()
    lists = {team_a: list(ranked_a), team_b: list(ranked_b)}
    cursor = {team_a: 0, team_b: 0}
    count = {team_a: 0, team_b: 0}

    def next_of(team: str) -> str | None:
        items, i = lists[team], cursor[team]
        while i < len(items) and items[i] in taken:
            i += 1
        cursor[team] = i
        return items[i] if i < len(items) else None

    while len(picked) < k:
        if count[team_a] < count[team_b]:
            order = (team_a, team_b)
        elif count[team_b] < count[team_a]:
            order = (team_b, team_a)
        else:
            order = (team_a, team_b) if rng.random() < 0.5 else (team_b, team_a)
        for team in order:
            item = next_of(team)
            if item is not None:
                break
        else:
            break  # both lists exhausted
        picked.append(item)
        teams.append(team)
        taken.add(item)
        count[team] += 1
    return tuple(picked), tuple(teams)
