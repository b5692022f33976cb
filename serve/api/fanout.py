"""Ingest fan-out: validate a request's events once, group them by user and shard, call the
shards concurrently, and put the per-event results back in request order."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from portrait import codec
from portrait.errors import BatchTooLarge, InvalidField, PortraitError
from serve.api.context import ApiContext
from serve.api.errors import InRequest, count, error_body, status_of


def encode_events(
    raw: Sequence[Mapping[str, Any]], latest: float,
    pseudonym: Callable[[str], str] | None = None,
) -> tuple[dict[str, list[bytes]], list[tuple[str, str, str]]]:
    """Each event validated and encoded once, grouped by the user's stored id; plus (the
    caller's user id, the stored one, event_id) in request order. Raises
    :class:`InRequest` naming ``events[i].field`` for the first bad event, before anything
    is written. With ``pseudonym``, events are stored under the pseudonym of their user id
    (validated as given first, so errors name the caller's field).

    ``latest`` is the latest ``occurred_at`` accepted (now plus the allowed clock skew): the
    fold's time decay is anchored at a user's newest event, so one event from a client whose
    clock is years ahead would decay every real event of that user to nothing, for good.
    """
    per_user: dict[str, list[bytes]] = defaultdict(list)
    order: list[tuple[str, str, str]] = []
    for i, item in enumerate(raw):
        try:
            event = codec.from_dict(item)
            if event.occurred_at > latest:
                raise InvalidField(
                    "occurred_at",
                    f"is {event.occurred_at - latest:.0f} s beyond the allowed clock skew "
                    "into the future; send the time the behaviour happened (Unix seconds, UTC)",
                )
            external = event.user_id
            if pseudonym is not None:
                event = codec.from_dict({**item, "user_id": pseudonym(external)})
            per_user[event.user_id].append(codec.encode(event))
        except PortraitError as exc:
            raise InRequest(exc, f"events[{i}].") from None
        order.append((external, event.user_id, event.event_id))
    return per_user, order


async def ingest(
    ctx: ApiContext, raw: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], int]:
    """Append a request's events; returns the per-event results and the HTTP status: 200
    when all were recorded, 207 when some users' batches failed, or the failures' common
    status when all did."""
    limit = ctx.limits.max_batch_events
    if len(raw) > limit:
        raise BatchTooLarge("events", len(raw), limit)
    if not raw:
        return [], 200
    per_user, order = encode_events(raw, time.time() + ctx.limits.max_future_skew_s,
                                    ctx.pseudonym)
    await ctx.ready()
    by_shard: dict[int, dict[str, list[bytes]]] = defaultdict(dict)
    for user_id, payloads in per_user.items():
        by_shard[ctx.shard_index(user_id)][user_id] = payloads
    replies = await asyncio.gather(*(ctx.shards[i].ingest(batch) for i, batch in by_shard.items()))
    outcome: dict[str, Any] = {}
    for reply in replies:
        outcome.update(reply)
    results: list[dict[str, Any]] = []
    cursor: dict[str, int] = defaultdict(int)
    for user_id, stored_id, event_id in order:
        got = outcome[stored_id]
        if isinstance(got, PortraitError):  # the user's whole batch was refused
            results.append({"event_id": event_id, "user_id": user_id, **error_body(got)})
        else:
            r = got[cursor[stored_id]]
            cursor[stored_id] += 1
            results.append(
                {
                    "user_id": user_id,
                    "event_id": r.event_id,
                    "seq": r.seq,
                    "position": r.position,
                    "duplicate": r.duplicate,
                }
            )
    errors = [o for o in outcome.values() if isinstance(o, PortraitError)]
    for error in errors:
        count(status_of(error), type(error).__name__, error)
    if not errors:
        return results, 200
    if len(errors) < len(outcome):
        return results, 207
    statuses = {status_of(e) for e in errors}
    return results, statuses.pop() if len(statuses) == 1 else 207
