"""Reading what attribution needs: an experiment's impressions and its users' item events.

The adapter half of :mod:`portrait.attribution` (the projection itself is the pure function
there): both inputs come from the stores, so the projection can be rebuilt at any time.
"""

from __future__ import annotations

from collections.abc import Sequence

from portrait.events import Event, ItemEvent
from portrait.impression import Impression
from portrait.ports import EventLog, ImpressionStore

PAGE = 1000


async def user_item_events(log: EventLog, user_id: str, since: float) -> list[Event]:
    """The user's item events that could answer an impression served at ``since`` or later:
    those naming a request, and the others that happened since."""
    out: list[Event] = []
    after = 0
    while True:
        page = await log.read(user_id, after_seq=after, limit=PAGE)
        for r in page:
            e = r.event
            if isinstance(e, ItemEvent) and (e.request_id is not None or e.occurred_at >= since):
                out.append(e)
        if len(page) < PAGE:
            return out
        after = page[-1].seq


async def attribution_inputs(
    impressions: ImpressionStore, log: EventLog, experiment: str
) -> tuple[list[Impression], list[Event]]:
    """The experiment's impressions, and the item events of its users."""
    served = await impressions.for_experiment(experiment)
    first: dict[str, float] = {}
    for imp in served:
        first[imp.user_id] = min(first.get(imp.user_id, imp.served_at), imp.served_at)
    events: list[Event] = []
    for user, since in first.items():
        events.extend(await user_item_events(log, user, since))
    return served, events


def experiment_users(served: Sequence[Impression]) -> set[str]:
    return {i.user_id for i in served}
