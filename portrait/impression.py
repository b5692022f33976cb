"""Impressions: what a recommendation response served, to whom, under which configuration.

Pure: the standard library only, no I/O.

An impression is recorded for every recommendation response (``request_id`` is the
response's id). It is kept outside the user's event log on purpose: it describes what the
service did, not what the user did, so it never enters the profile fold. What the user did
with it is attributed later from the log (:mod:`portrait.attribution`).

``items`` are the served ids in rank order (position = index). ``teams`` is set under
interleaving only: for each position, the variant whose list contributed the item
(:mod:`portrait.interleaving`). ``shown`` is what the client reported it displayed, when it
showed fewer items than it fetched (None: everything served counts as shown).
"""

from __future__ import annotations

from dataclasses import dataclass

from portrait.errors import InvalidField

# Experiment modes: users split between variants, or every user served an interleaving.
AB = "ab"
INTERLEAVE = "interleave"
MODES = (AB, INTERLEAVE)


@dataclass(frozen=True, slots=True)
class Impression:
    """One served recommendation list.

    Attributes:
        request_id: the response's id (unique).
        user_id: the user as the log knows them (a pseudonym when ids are pseudonymised).
        experiment: the experiment's name; ``""`` when the service runs a single
            configuration.
        variant: the variant that served the list; under interleaving, the experiment mode
            (:data:`INTERLEAVE`), the teams saying who contributed what.
        config_hash: the serving configuration's hash (profile, ranking, item vectors).
        item_space: the collaborative item-space version ranked in (-1: text vectors only).
        items: the served item ids, best first.
        served_at: Unix seconds (the ingress's clock).
        teams: per position, the contributing variant (interleaving only).
        shown: the item ids the client reported displaying (None: all of ``items``).
        ranker: which ranker ordered the served list: ``"blend"`` for the linear blend, or
            ``"learned:<item space version>"`` for the learned ranker stored with that space.
    """

    request_id: str
    user_id: str
    experiment: str
    variant: str
    config_hash: str
    item_space: int
    items: tuple[str, ...]
    served_at: float
    teams: tuple[str, ...] | None = None
    shown: tuple[str, ...] | None = None
    ranker: str = "blend"

    def __post_init__(self) -> None:
        if self.teams is not None and len(self.teams) != len(self.items):
            raise InvalidField("teams", "needs one team per served position")

    @property
    def displayed(self) -> tuple[str, ...]:
        """The items the user could have acted on: those shown if reported, else all served."""
        return self.items if self.shown is None else self.shown

    def position(self, item_id: str) -> int | None:
        """The item's 0-based position in the served list, or None if it was not displayed."""
        if item_id not in self.displayed:
            return None
        return self.items.index(item_id)

    def team_of(self, item_id: str) -> str | None:
        """Under interleaving, the variant that contributed ``item_id``."""
        pos = self.position(item_id)
        return None if pos is None or self.teams is None else self.teams[pos]


def check_shown(impression: Impression, item_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The reported displayed items, checked against what was served (kept in served order).

    Raises:
        InvalidField: an id that was not served, or an empty list.
    """
    if not item_ids:
        raise InvalidField("item_ids", "name at least one displayed item")
    served = set(impression.items)
    for i, item in enumerate(item_ids):
        if item not in served:
            raise InvalidField(f"item_ids[{i}]", f"item {item!r} was not in the served list")
    wanted = set(item_ids)
    return tuple(i for i in impression.items if i in wanted)
