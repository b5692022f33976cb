"""Behaviour events: frozen, past-tense facts about one user.

Every event carries a client-chosen ``event_id`` (the idempotency key), the ``user_id`` whose
stream it belongs to and ``occurred_at``, the time the behaviour happened in Unix seconds (UTC),
set by whoever observed it. The fold never reads a clock, so replay is deterministic.

Each class has a wire name (``TYPE``) and a ``SCHEMA_VERSION``; the codec upcasts older stored
versions to the current class (see :mod:`portrait.codec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar

from portrait.errors import InvalidField
from portrait.validation import check_id, check_text, check_unix_time

MAX_ID_LENGTH = 128
MAX_TEXT_LENGTH = 8_000
MIN_RATING = 0.0
MAX_RATING = 5.0
# Personal data a user may set about themselves; closed so that nothing else sneaks in.
ATTRIBUTE_KEYS = frozenset({"age_band", "gender", "region", "country", "language"})
MAX_ATTRIBUTE_LENGTH = 64


def _check_id(name: str, value: object) -> None:
    check_id(name, value, MAX_ID_LENGTH)


def _check_time(name: str, value: object) -> None:
    check_unix_time(name, value)


def _check_text(name: str, value: object) -> None:
    check_text(name, value, MAX_TEXT_LENGTH, required=True)


def _check_rating(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidField(name, f"must be a number, got {type(value).__name__}")
    if not MIN_RATING <= value <= MAX_RATING:
        raise InvalidField(name, f"must be between {MIN_RATING:g} and {MAX_RATING:g}")


@dataclass(frozen=True, slots=True)
class Event:
    """Fields every event has. Not instantiated itself."""

    TYPE: ClassVar[str] = ""
    SCHEMA_VERSION: ClassVar[int] = 1

    event_id: str
    user_id: str
    occurred_at: float

    def __post_init__(self) -> None:
        _check_id("event_id", self.event_id)
        _check_id("user_id", self.user_id)
        _check_time("occurred_at", self.occurred_at)


@dataclass(frozen=True, slots=True)
class ItemEvent(Event):
    """An event about one catalog item.

    ``request_id`` (optional, every item event type) names the recommendation response the
    item was picked from, so online experiments can attribute the behaviour to what was
    served (:mod:`portrait.attribution`). It was added without a schema version bump: absent
    means None, and the codec leaves a None out of the wire mapping, so events without it
    encode to the same bytes as before and older payloads read back unchanged. Keyword-only,
    so the subclasses' own required fields keep their positions.
    """

    item_id: str
    request_id: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_id("item_id", self.item_id)
        if self.request_id is not None:
            _check_id("request_id", self.request_id)


@dataclass(frozen=True, slots=True)
class ItemViewed(ItemEvent):
    """The user saw an item's page or card long enough to count as a view."""

    TYPE: ClassVar[str] = "view"


@dataclass(frozen=True, slots=True)
class ItemClicked(ItemEvent):
    """The user clicked an item."""

    TYPE: ClassVar[str] = "click"


@dataclass(frozen=True, slots=True)
class ItemAddedToCart(ItemEvent):
    """The user put an item in their cart."""

    TYPE: ClassVar[str] = "add_to_cart"


@dataclass(frozen=True, slots=True)
class ItemPurchased(ItemEvent):
    """The user bought an item."""

    TYPE: ClassVar[str] = "purchase"


@dataclass(frozen=True, slots=True)
class ItemDismissed(ItemEvent):
    """Negative feedback: the user asked not to see an item (or items like it)."""

    TYPE: ClassVar[str] = "dismiss"


@dataclass(frozen=True, slots=True)
class ItemRated(ItemEvent):
    """The user gave an item a rating from 0 to 5."""

    TYPE: ClassVar[str] = "rating"

    rating: float

    def __post_init__(self) -> None:
        ItemEvent.__post_init__(self)
        _check_rating("rating", self.rating)


@dataclass(frozen=True, slots=True)
class ReviewWritten(ItemEvent):
    """The user wrote a review of an item, optionally with a rating.

    Version history: v1 had ``body`` and an integer ``stars`` (1-5, required); v2 renamed
    ``body`` to ``text`` and made the rating an optional float.
    """

    TYPE: ClassVar[str] = "review"
    SCHEMA_VERSION: ClassVar[int] = 2

    text: str
    rating: float | None = None

    def __post_init__(self) -> None:
        ItemEvent.__post_init__(self)
        _check_text("text", self.text)
        if self.rating is not None:
            _check_rating("rating", self.rating)


@dataclass(frozen=True, slots=True)
class SearchPerformed(Event):
    """The user searched; the query text says what they were looking for."""

    TYPE: ClassVar[str] = "search"

    query: str

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        _check_text("query", self.query)


@dataclass(frozen=True, slots=True)
class AttributesSet(Event):
    """The user (or an upstream system) set basic attributes: age band, region, language...

    An empty string clears an attribute. These are personal data; only the keys in
    :data:`ATTRIBUTE_KEYS` are accepted.
    """

    TYPE: ClassVar[str] = "attributes_set"

    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Event.__post_init__(self)
        if not isinstance(self.attributes, Mapping) or not self.attributes:
            raise InvalidField("attributes", "must be a non-empty object")
        for key, value in self.attributes.items():
            if key not in ATTRIBUTE_KEYS:
                raise InvalidField(
                    f"attributes.{key}", f"unknown attribute; allowed: {sorted(ATTRIBUTE_KEYS)}"
                )
            if not isinstance(value, str):
                raise InvalidField(
                    f"attributes.{key}", f"must be a string of at most {MAX_ATTRIBUTE_LENGTH}"
                )
            check_text(f"attributes.{key}", value, MAX_ATTRIBUTE_LENGTH, required=False)
        # Frozen means frozen: callers cannot mutate the mapping after validation.
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    def __hash__(self) -> int:
        return hash((self.event_id, tuple(sorted(self.attributes.items()))))


EVENT_CLASSES: tuple[type[Event], ...] = (
    ItemViewed,
    ItemClicked,
    ItemAddedToCart,
    ItemPurchased,
    ItemDismissed,
    ItemRated,
    ReviewWritten,
    SearchPerformed,
    AttributesSet,
)
EVENT_TYPES: Mapping[str, type[Event]] = MappingProxyType({c.TYPE: c for c in EVENT_CLASSES})
# Item events that say a user wanted the item: popularity and evaluation targets count these
# (a dismissal is negative feedback, not popularity).
POSITIVE_ITEM_TYPES = frozenset(
    {ItemViewed.TYPE, ItemClicked.TYPE, ItemAddedToCart.TYPE, ItemPurchased.TYPE, ItemRated.TYPE,
     ReviewWritten.TYPE}
)


def event_text(event: Event) -> str | None:
    """The free text an event carries (review body, search query), if any."""
    if isinstance(event, ReviewWritten):
        return event.text
    if isinstance(event, SearchPerformed):
        return event.query
    return None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as the log holds it: with its per-user ``seq`` and global ``position``."""

    seq: int
    position: int
    recorded_at: float
    event: Event
