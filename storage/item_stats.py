"""Interaction counts per item, the input of the popularity prior."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.retry import DEFAULT_RETRY, RetryPolicy
from storage.schema import events

# Negative feedback is not popularity.
POSITIVE_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "review")


async def item_interaction_counts(
    engine: AsyncEngine, since: float | None = None, retry: RetryPolicy = DEFAULT_RETRY
) -> dict[str, int]:
    """item_id -> number of positive interaction events (optionally since a Unix time)."""
    query = (
        select(events.c.item_id, func.count())
        .where(events.c.item_id.is_not(None), events.c.event_type.in_(POSITIVE_TYPES))
        .group_by(events.c.item_id)
    )
    if since is not None:
        query = query.where(events.c.occurred_at >= since)

    async def run() -> dict[str, int]:
        async with engine.connect() as conn:
            return {row[0]: int(row[1]) for row in await conn.execute(query)}

    return await retry.run(run)
