"""Attribution: which served list a user's behaviour came from.

Pure: the standard library only, no I/O. A projection of the event log and the recorded
impressions: :func:`attribute` rebuilds it from them at any time (the report does), and the
ingress runs the same rules incrementally (:class:`Attributor`) for its live counters.

Rules, for an item event (view, click, add to cart, purchase, rating, review; a dismissal is
never credited):

* With a ``request_id``: attributed to that impression if it exists, belongs to the same
  user and displayed the item. An unknown id, another user's, or an item that list did not
  display is *ignored* (counted by reason, never an error for the event: the event itself
  is recorded and folded like any other).
* Without one: attributed to the latest impression of the same user served at most
  ``window_s`` before the event (and not after it) that displayed the item; else it is
  not attributed (organic behaviour, not counted as ignored).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from portrait.events import (
    POSITIVE_ITEM_TYPES,
    Event,
    ItemEvent,
    ItemPurchased,
    ItemRated,
    ReviewWritten,
)
from portrait.impression import Impression

DEFAULT_WINDOW_S = 3600.0
CONVERSION_RATING = 4.0

# Why an event's request_id was not honoured.
UNKNOWN = "unknown"  # no impression has that id
FOREIGN = "foreign"  # the impression was served to another user
NOT_DISPLAYED = "not_displayed"  # the impression did not display that item
IGNORED_REASONS = (UNKNOWN, FOREIGN, NOT_DISPLAYED)


def is_conversion(event: Event) -> bool:
    """A purchase, or a rating (or reviewed rating) of at least 4."""
    if isinstance(event, ItemPurchased):
        return True
    if isinstance(event, (ItemRated, ReviewWritten)):
        return event.rating is not None and event.rating >= CONVERSION_RATING
    return False


@dataclass(frozen=True, slots=True)
class Attributed:
    """One event credited to one impression.

    Attributes:
        request_id: the impression.
        event_id, event_type, occurred_at: the event.
        item_id: the item acted on.
        position: its 0-based position in the served list.
        team: under interleaving, the variant that contributed the item.
        conversion: see :func:`is_conversion`.
        explicit: whether the event named the impression (else the window rule found it).
    """

    request_id: str
    event_id: str
    event_type: str
    occurred_at: float
    item_id: str
    position: int
    team: str | None
    conversion: bool
    explicit: bool


@dataclass
class Attribution:
    """The projection: attributed events, and ignored request ids by reason."""

    attributed: list[Attributed] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=lambda: dict.fromkeys(IGNORED_REASONS, 0))

    def by_impression(self) -> dict[str, list[Attributed]]:
        out: dict[str, list[Attributed]] = defaultdict(list)
        for a in self.attributed:
            out[a.request_id].append(a)
        return dict(out)


class Attributor:
    """The rules above, one event at a time, over impressions added as they are served.

    Impressions must be added in ``served_at`` order per user (the ingress serves them that
    way; :func:`attribute` sorts). ``forget_before`` bounds memory in a long-lived process.
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        if window_s < 0:
            raise ValueError("window_s must be >= 0")
        self.window_s = window_s
        self._by_id: dict[str, Impression] = {}
        self._by_user: dict[str, list[Impression]] = defaultdict(list)
        self._times: dict[str, list[float]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, impression: Impression) -> None:
        self._by_id[impression.request_id] = impression
        times = self._times[impression.user_id]
        at = bisect.bisect_right(times, impression.served_at)
        times.insert(at, impression.served_at)
        self._by_user[impression.user_id].insert(at, impression)

    def replace(self, impression: Impression) -> None:
        """Swap in a newer record of a known impression (its ``shown`` list was reported)."""
        old = self._by_id.get(impression.request_id)
        if old is None:
            self.add(impression)
            return
        self._by_id[impression.request_id] = impression
        mine = self._by_user[impression.user_id]
        mine[mine.index(old)] = impression

    def get(self, request_id: str) -> Impression | None:
        return self._by_id.get(request_id)

    def forget_user(self, user_id: str) -> None:
        for imp in self._by_user.pop(user_id, []):
            self._by_id.pop(imp.request_id, None)
        self._times.pop(user_id, None)

    def forget_before(self, served_at: float) -> int:
        """Drop impressions served before ``served_at``; returns how many."""
        dropped = 0
        for user in list(self._by_user):
            times = self._times[user]
            cut = bisect.bisect_left(times, served_at)
            if not cut:
                continue
            for imp in self._by_user[user][:cut]:
                self._by_id.pop(imp.request_id, None)
            dropped += cut
            del times[:cut]
            del self._by_user[user][:cut]
            if not times:
                del self._by_user[user], self._times[user]
        return dropped

    def attribute(self, event: Event) -> Attributed | str | None:
        """The event's attribution, the reason its request id was ignored, or None (not an
        attributable event, or organic)."""
        if not isinstance(event, ItemEvent) or event.TYPE not in POSITIVE_ITEM_TYPES:
            return None
        if event.request_id is not None:
            imp = self._by_id.get(event.request_id)
            if imp is None:
                return UNKNOWN
            if imp.user_id != event.user_id:
                return FOREIGN
            if imp.position(event.item_id) is None:
                return NOT_DISPLAYED
            return self._credit(imp, event, explicit=True)
        times = self._times.get(event.user_id)
        if not times:
            return None
        mine = self._by_user[event.user_id]
        end = bisect.bisect_right(times, event.occurred_at)
        for i in range(end - 1, -1, -1):  # latest first
            if event.occurred_at - times[i] > self.window_s:
                break
            if mine[i].position(event.item_id) is not None:
                return self._credit(mine[i], event, explicit=False)
        return None

    @staticmethod
    def _credit(imp: Impression, event: ItemEvent, *, explicit: bool) -> Attributed:
        position = imp.position(event.item_id)
        assert position is not None
        return Attributed(imp.request_id, event.event_id, event.TYPE, event.occurred_at,
                          event.item_id, position, imp.team_of(event.item_id),
                          is_conversion(event), explicit)


def attribute(
    impressions: Iterable[Impression], events: Iterable[Event],
    window_s: float = DEFAULT_WINDOW_S,
) -> Attribution:
    """The attribution of ``events`` to ``impressions`` (see the module docstring). The
    result does not depend on the order either is given in."""
    attributor = Attributor(window_s)
    for imp in sorted(impressions, key=lambda i: (i.served_at, i.request_id)):
        attributor.add(imp)
    out = Attribution()
    for event in sorted(events, key=lambda e: (e.occurred_at, e.user_id, e.event_id)):
        got = attributor.attribute(event)
        if isinstance(got, Attributed):
            out.attributed.append(got)
        elif isinstance(got, str):
            out.ignored[got] += 1
    return out


def ignored_total(ignored: Mapping[str, int]) -> int:
    return sum(ignored.values())
