"""Synthetic traffic for load runs: a catalog and user streams shaped like a shop's or a media
app's, at any size, deterministic, without I/O.

What makes it realistic enough to load-test with (and what it does not claim to be):

* **Item popularity is Zipf** (exponent ``zipf_s``): a short head of items takes most views,
  as in every interaction log we have (MovieLens, Amazon reviews). Each item has one or two
  genre tags; popularity is ranked within the whole catalog.
* **Users differ in activity** (log-normal events per user, mean ``events / users``): most
  users have a handful of events, a few have thousands, so a load run has cold users, warm
  users and heavy users whose replay is long.
* **Users have tastes**: each has one to three favourite genres; ``taste`` of their item
  events fall in those genres (Zipf within the genre), the rest follow global popularity.
* **Sessions are bursty**: events come in sessions (geometric length, mean
  ``session_mean``) seconds to a minute apart; sessions are hours to days apart.
* **A share of events carries text** (``text_share``): searches and short reviews built from
  the user's genres, so the text path (encoder, keywords) is exercised. Text is made of a
  small vocabulary; it is not natural language and measures cost, not quality.

A user's stream depends only on ``(seed, user index)``, so a load can be split across
processes, resumed from any user, and regenerated identically to check what was stored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from portrait.events import (
    Event,
    ItemAddedToCart,
    ItemClicked,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
)

GENRES = (
    "action", "adventure", "animation", "comedy", "crime", "documentary", "drama", "family",
    "fantasy", "history", "horror", "music", "mystery", "romance", "science-fiction",
    "thriller", "war", "western", "sport", "travel", "cooking", "gardening", "technology",
    "fashion",
)
# Words a search or review about a genre uses (the genre's own name, then these).
_WORDS = ("classic", "new", "best", "funny", "dark", "short", "long", "family", "award",
          "cheap", "gift", "series", "original", "remastered", "indie", "popular")
# Item-event types by share of item events (views dominate, purchases are rare).
_ITEM_KINDS = ((ItemViewed, 0.70), (ItemClicked, 0.15), (ItemAddedToCart, 0.06),
               (ItemPurchased, 0.03), (ItemRated, 0.06))


@dataclass(frozen=True)
class TrafficShape:
    """The size and shape of a synthetic load (see the module's docstring)."""

    users: int
    events: int
    items: int = 50_000
    zipf_s: float = 1.05
    text_share: float = 0.05
    taste: float = 0.7
    session_mean: float = 6.0
    activity_sigma: float = 1.2
    start: float = 1_700_000_000.0
    span_days: float = 180.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("users", "events", "items"):
            if getattr(self, name) < 1:
                raise InvalidField(name, "must be at least 1")
        for name in ("text_share", "taste"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InvalidField(name, "must be between 0 and 1")
        if self.zipf_s <= 0 or self.session_mean < 1 or self.activity_sigma < 0:
            raise InvalidField("shape", "zipf_s > 0, session_mean >= 1, activity_sigma >= 0")

    @property
    def mean_events(self) -> float:
        return self.events / self.users


def user_id(index: int) -> str:
    return f"u{index:08d}"


def item_id(rank: int) -> str:
    """Items are named by popularity rank (0 = the most popular)."""
    return f"i{rank:07d}"


def _item_genres(shape: TrafficShape) -> np.ndarray:
    """Each item's primary genre (items of every genre spread over the popularity ranks)."""
    rng = np.random.default_rng([shape.seed, 1])
    return rng.integers(0, len(GENRES), size=shape.items)


def catalog(shape: TrafficShape) -> list[ItemRecord]:
    """The catalog the streams refer to: one or two genre tags per item."""
    primary = _item_genres(shape)
    rng = np.random.default_rng([shape.seed, 2])
    second = rng.integers(0, len(GENRES), size=shape.items)
    has_second = rng.random(shape.items) < 0.4
    out = []
    for rank in range(shape.items):
        tags = [GENRES[primary[rank]]]
        if has_second[rank] and second[rank] != primary[rank]:
            tags.append(GENRES[second[rank]])
        out.append(ItemRecord(item_id(rank), f"{tags[0].title()} title {rank}",
                              f"A {' and '.join(tags)} item.", tuple(tags)))
    return out


class _Popularity:
    """Zipf sampling over the whole catalog and within each genre (inverse CDF, numpy)."""

    def __init__(self, shape: TrafficShape) -> None:
        weights = 1.0 / np.arange(1, shape.items + 1) ** shape.zipf_s
        self.cdf = np.cumsum(weights) / weights.sum()
        genres = _item_genres(shape)
        self.by_genre: list[tuple[np.ndarray, np.ndarray]] = []
        for g in range(len(GENRES)):
            ranks = np.flatnonzero(genres == g)
            if ranks.size == 0:  # a tiny catalog: fall back to the global chart
                ranks = np.arange(shape.items)
            w = weights[ranks]
            self.by_genre.append((ranks, np.cumsum(w) / w.sum()))

    def draw(self, rng: np.random.Generator, n: int, favourites: np.ndarray,
             taste: float) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, rng.random(n), side="right")
        in_taste = rng.random(n) < taste
        genre_of = favourites[rng.integers(0, favourites.size, size=n)]
        for i in np.flatnonzero(in_taste):
            genre_ranks, cdf = self.by_genre[genre_of[i]]
            ranks[i] = genre_ranks[np.searchsorted(cdf, rng.random(), side="right")]
        out: np.ndarray = np.minimum(ranks, self.cdf.size - 1)
        return out


class TrafficGenerator:
    """Streams of :class:`TrafficShape`; :meth:`stream` is one user's, in time order."""

    def __init__(self, shape: TrafficShape) -> None:
        self.shape = shape
        self._popularity = _Popularity(shape)
        # Log-normal activity with the shape's mean: mu = ln(mean) - sigma^2 / 2.
        self._mu = math.log(shape.mean_events) - shape.activity_sigma ** 2 / 2

    def count(self, index: int) -> int:
        """How many events user ``index`` has (at least one)."""
        rng = np.random.default_rng([self.shape.seed, 3, index])
        return max(1, int(round(rng.lognormal(self._mu, self.shape.activity_sigma))))

    def stream(self, index: int) -> list[Event]:
        shape = self.shape
        n = self.count(index)
        rng = np.random.default_rng([shape.seed, 4, index])
        favourites = rng.choice(len(GENRES), size=int(rng.integers(1, 4)), replace=False)
        times = self._times(rng, n)
        ranks = self._popularity.draw(rng, n, favourites, shape.taste)
        texts = rng.random(n) < shape.text_share
        kinds = rng.choice(len(_ITEM_KINDS), size=n, p=[p for _, p in _ITEM_KINDS])
        uid = user_id(index)
        out: list[Event] = []
        for k in range(n):
            eid, at, item = f"{uid}-{k}", float(times[k]), item_id(int(ranks[k]))
            if texts[k]:
                genre = GENRES[favourites[k % favourites.size]]
                words = " ".join(_WORDS[int(w)] for w in rng.integers(0, len(_WORDS), size=2))
                if rng.random() < 0.6:
                    out.append(SearchPerformed(eid, uid, at, f"{words} {genre}"))
                else:
                    out.append(ReviewWritten(eid, uid, at, item,
                                             f"A {words} {genre} pick, would recommend.",
                                             float(rng.integers(3, 6))))
                continue
            cls = _ITEM_KINDS[int(kinds[k])][0]
            if cls is ItemRated:
                out.append(ItemRated(eid, uid, at, item, float(rng.integers(1, 6))))
            else:
                out.append(cls(eid, uid, at, item))  # type: ignore[call-arg]  # not ItemRated
        return out

    def _times(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Bursty: sessions of geometric length, events 5-60 s apart inside a session,
        sessions hours to days apart; the whole stream inside the shape's span."""
        shape = self.shape
        new_session = rng.random(n) < 1.0 / shape.session_mean
        new_session[0] = True
        gaps = np.where(new_session, rng.exponential(2 * 86_400.0, size=n),
                        rng.uniform(5.0, 60.0, size=n))
        t = np.cumsum(gaps)
        span = shape.span_days * 86_400.0
        if t[-1] > span:  # a heavy user: squeeze into the span, keeping the order
            t = t * (span / t[-1])
        offset = rng.uniform(0.0, span - t[-1]) if t[-1] < span else 0.0
        # Whole milliseconds: strictly increasing, and exact through JSON and the codec.
        out = np.round(shape.start + offset + t, 3)
        return out

    def users(self, first: int = 0, count: int | None = None) -> Iterator[list[Event]]:
        """Streams of users ``first`` .. ``first + count - 1`` (default: to the last user)."""
        stop = self.shape.users if count is None else min(self.shape.users, first + count)
        for index in range(first, stop):
            yield self.stream(index)
