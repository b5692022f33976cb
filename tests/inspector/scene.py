"""A small, real-looking world for the browser test and its screenshots, from the bundled
MovieLens sample (data/movielens-ml-latest-small).

The user under inspection is MovieLens user 536, with the first ratings of that user's real
history. MovieLens has ratings only, so a few events of the other kinds (a profile's
attributes, a search, a view, a review, an add-to-cart) are written in between, to show how
each kind appears; their wording is ours. Other MovieLens users' ratings of the same movies
give the popularity prior something to count.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from storage.datasets.movielens import load_movielens

USER = "536"
USER_RATINGS = 28
OTHER_USERS = 40
POPULAR_MOVIES = 150


def _event(kind: str, n: int, user: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"scene:{user}:{n}", "user_id": user, "occurred_at": t,
            **fields}


def build() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(items, events) as the API takes them: the catalog slice and every user's events."""
    data = load_movielens()
    movies = {m.item_id: m for m in data.items}
    mine = [e for e in data.events if e.user_id == USER][:USER_RATINGS]
    counts = Counter(e.item_id for e in data.events)
    wanted = {e.item_id for e in mine} | {i for i, _ in counts.most_common(POPULAR_MOVIES)}
    items = [{"id": m.item_id, "title": m.title, "description": m.description,
              "tags": list(m.tags), "attributes": dict(m.attributes)}
             for m in data.items if m.item_id in wanted]

    events: list[dict[str, Any]] = []
    start = mine[0].occurred_at
    events.append(_event("attributes_set", 0, USER, start - 60,
                         attributes={"age_band": "25-34", "country": "US", "language": "en"}))
    for n, rating in enumerate(mine, start=1):
        t = rating.occurred_at
        events.append({"type": "rating", "event_id": f"ml:{USER}:{rating.item_id}:rating",
                       "user_id": USER, "occurred_at": t, "item_id": rating.item_id,
                       "rating": rating.rating})
        if n == 6:
            events.append(_event("search", n, USER, t + 1,
                                 query="space mission astronauts true story"))
        if n == 12:
            events.append(_event("view", n, USER, t + 1, item_id=rating.item_id))
        if n == 16:
            title = movies[rating.item_id].title
            events.append(_event("review", n, USER, t + 2, item_id=rating.item_id,
                                 rating=rating.rating,
                                 text=f"{title}: tense, clever thriller with a great cast"))
        if n == 22:
            events.append(_event("add_to_cart", n, USER, t + 1, item_id=rating.item_id))

    others = sorted({e.user_id for e in data.events if e.user_id != USER}, key=int)
    chosen = set(others[:OTHER_USERS])
    events += [
        {"type": "rating", "event_id": f"ml:{e.user_id}:{e.item_id}:rating",
         "user_id": e.user_id, "occurred_at": e.occurred_at, "item_id": e.item_id,
         "rating": e.rating}
        for e in data.events if e.user_id in chosen and e.item_id in wanted
    ]
    return items, events
