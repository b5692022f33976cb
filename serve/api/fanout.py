"""Ingest fan-out: validate a request's events once, group them by user and shard, call the
shards concurrently, and put the per-event results back in request order."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from portrait import codec
from portrait.errors import (
    BatchTooLarge,
    InvalidField,
    NotOwner,
    PortraitError,
    ShardUnavailable,
)
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


async def _send(ctx: ApiContext, per_user: dict[str, list[bytes]]) -> dict[str, Any]:
    """Each user's batch to the shard that owns them, all shards at once. Users refused
    because they moved (the shard set changed), and the users of a shard that was retired,
    are sent again by the new topology; any other failure of a shard call fails the request
    (503 for a shard that is down), as before."""
    outcome: dict[str, Any] = {}
    todo = per_user
    for attempt in range(4):
        routed_by = ctx.router.topology.epoch
        by_shard: dict[str, dict[str, list[bytes]]] = defaultdict(dict)
        for user_id, payloads in todo.items():
            by_shard[ctx.router.topology.owner(user_id)][user_id] = payloads
        names = list(by_shard)
        replies = await asyncio.gather(
            *(ctx.router.shard_for(next(iter(by_shard[n]))).ingest(by_shard[n]) for n in names),
            return_exceptions=True)
        failed: BaseException | None = None
        refused = False  # a shard said a user moved: a new topology is being published
        moved: dict[str, list[bytes]] = {}
        for name, reply in zip(names, replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, ShardUnavailable):
                    raise reply
                failed = reply
                moved.update(by_shard[name])
                continue
            for user_id, result in reply.items():
                if isinstance(result, NotOwner):
                    moved[user_id] = todo[user_id]
                    refused = True
                else:
                    outcome[user_id] = result
        if not moved:
            return outcome
        if attempt == 3 or not await ctx.router.follow_topology(routed_by,
                                                         wait_s=5.0 if refused else 0.0):
            if failed is not None:
                raise failed
            outcome.update(dict.fromkeys(moved, NotOwner(
                "the user is moving between shards; retry")))
            return outcome
        todo = moved
    return outcome


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
    outcome = await _send(ctx, per_user)
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
