"""A simulated online experiment: a data set's held-out next items replayed through the
service's API, with a user who acts only when the item they really chose next is served.

Each test user of a leave-last-out split has their history (every event before their test
case) in the log; the simulation asks the service for their top ``k`` and, when the held-out
item is in it, sends the user's real next event naming the response's ``request_id`` (the
served list is then credited through the same attribution as in production). A variant
that ranks the true next item higher more often wins; that is exactly what the offline
evaluation measures (HR@k) on the same users, so the two must agree on which is better.

:func:`users_to_significance` then asks, for growing prefixes of the users, from how many
users on the result is significant: an A/B split (the click-through difference's 95%
interval excludes 0) against interleaving (sign test p < 0.05 over users).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from offline.prepare import Prepared
from portrait import codec
from portrait.attribution import Attribution, attribute
from portrait.events import Event
from portrait.experiment_report import build_report
from portrait.impression import Impression
from portrait.ports import EventLog, ImpressionStore
from storage.attribution import attribution_inputs


def history(prep: Prepared, prefix: str, phase: str = "test") -> dict[str, list[Event]]:
    """Each test user's events before their test case, under ``prefix`` + their id."""
    split = prep.splits[phase]
    out: dict[str, list[Event]] = {}
    for case in split.cases:
        events = split.streams[case.user_id][: case.cutoff]
        out[prefix + case.user_id] = [
            codec.from_dict({**codec.to_dict(e), "user_id": prefix + e.user_id}) for e in events
        ]
    return out


@dataclass(frozen=True)
class Served:
    user_id: str
    request_id: str
    variant: str
    hit: bool


async def simulate(
    prep: Prepared, client: httpx.AsyncClient, users: Sequence[str], *, prefix: str,
    k: int = 10, concurrency: int = 8, phase: str = "test",
) -> list[Served]:
    """One impression per user in ``users`` (the split's ids); the user's true next event
    is sent, naming the response, when its item was served."""
    split = prep.splits[phase]
    cases = {c.user_id: c for c in split.cases}
    gate = asyncio.Semaphore(concurrency)

    async def one(user: str) -> Served:
        case = cases[user]
        async with gate:
            resp = await client.get(f"/v1/users/{prefix}{user}/recommendations",
                                    params={"k": k}, timeout=120)
            resp.raise_for_status()
            body = resp.json()
            served = {i["item_id"] for i in body["items"]}
            # The user's real first event on each held-out item the list showed them (one
            # item under leave-last-out; every new item after the cut under a temporal split).
            chosen = [t for t in case.targets if t in served]
            firsts = {}
            for e in split.streams[user][case.cutoff:]:
                item = getattr(e, "item_id", None)
                if item in chosen and item not in firsts:
                    firsts[item] = e
            events = [{**codec.to_dict(e), "user_id": prefix + user,
                       "event_id": prefix + e.event_id, "request_id": body["request_id"]}
                      for e in firsts.values()]
            if events:
                sent = await client.post("/v1/events", json={"events": events}, timeout=120)
                sent.raise_for_status()
        return Served(prefix + user, body["request_id"], body["variant"], bool(events))

    return list(await asyncio.gather(*(one(u) for u in users)))


async def load(
    impressions: ImpressionStore, log: EventLog, experiment: str
) -> tuple[list[Impression], Attribution]:
    served, events = await attribution_inputs(impressions, log, experiment)
    return served, attribute(served, events)


def report_for(
    experiment: str, served: Sequence[Impression], attribution: Attribution, users: set[str],
    catalog_size: int, variants: Sequence[str],
) -> dict[str, Any]:
    """The report over the impressions of ``users`` only."""
    mine = [i for i in served if i.user_id in users]
    ids = {i.request_id for i in mine}
    sub = Attribution([a for a in attribution.attributed if a.request_id in ids],
                      dict(attribution.ignored))
    return build_report(experiment, mine, sub, catalog_size, variants=variants, seed=0)


def significant(report: dict[str, Any], treatment: str) -> bool:
    """Interleaving: sign test p < 0.05 over users; A/B: the CTR difference's interval
    excludes 0."""
    if report["interleaving"] is not None:
        return bool(report["interleaving"]["by_user"]["p_value"] < 0.05)
    diff = report["differences"].get(treatment)
    return diff is not None and not diff["ctr"]["ci_low"] <= 0.0 <= diff["ctr"]["ci_high"]


def users_to_significance(
    experiment: str, served: Sequence[Impression], attribution: Attribution,
    order: Sequence[str], catalog_size: int, variants: Sequence[str], step: int = 10,
) -> int | None:
    """The smallest prefix of ``order`` (in steps of ``step`` users) whose report is
    significant and stays so at every larger prefix checked; None if the full set is not."""
    found: int | None = None
    for n in range(step, len(order) + step, step):
        n = min(n, len(order))
        ok = significant(report_for(experiment, served, attribution, set(order[:n]),
                                    catalog_size, variants), variants[1])
        if ok and found is None:
            found = n
        elif not ok:
            found = None
    return found
