"""The served-path evaluation: the same split and metrics as the offline run, over HTTP.

A running service gets the evaluation's catalog, then each test user's events before their
test case (exactly what the offline run folds; no event after a case's cutoff is sent), then
retrains its collaborative item space if its config uses one. Each test user's top K is then
asked for over HTTP and scored with the offline metrics; the offline evaluation of the same
configuration on the same split, and the popularity and item-kNN baselines, run alongside, so
the gap between what is measured and what is served is one table.

Differences that remain by design: the service's popularity prior counts every replayed event
(offline counts those up to each case's horizon), and its collaborative vectors are trained
on the items of the events it holds, in its own order (same model and settings). Ranks are
read from a top-K list: a target below K counts as a miss, so MRR is MRR@K.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from offline.prepare import Prepared
from portrait import catalog, codec
from portrait.evaluation.baselines import ItemKNN, MostPopular
from portrait.evaluation.metrics import per_user_metrics
from portrait.evaluation.runner import System, run
from portrait.evaluation.summary import KS
from portrait.evaluation.tuning import PortraitParams
from portrait.events import Event
from portrait.item_space import CollabSettings

TOP_K = 50
ITEM_BATCH = 500
EVENT_BATCH = 500
RETRIES = 30


async def _post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> Any:
    """POST with the documented client behaviour: retry 503s (same body), bounded."""
    for _ in range(RETRIES):
        resp = await client.post(path, json=body, timeout=600)
        if resp.status_code != 503:
            if resp.status_code >= 400:
                raise RuntimeError(f"{path}: {resp.status_code} {resp.text[:300]}")
            return resp.json()
        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))
    raise RuntimeError(f"{path}: still 503 after {RETRIES} tries")


def replayed_events(prep: Prepared, phase: str = "test") -> list[Event]:
    """Each test user's events before their (last) test case, in time order."""
    split = prep.splits[phase]
    cutoff: dict[str, int] = {}
    for case in split.cases:
        cutoff[case.user_id] = max(cutoff.get(case.user_id, 0), case.cutoff)
    events = [e for user, n in cutoff.items() for e in split.streams[user][:n]]
    return sorted(events, key=lambda e: (e.occurred_at, e.user_id, e.event_id))


async def evaluate_served(
    prep: Prepared,
    client: httpx.AsyncClient,
    *,
    prefix: str = "",
    phase: str = "test",
    concurrency: int = 4,
) -> dict[str, Any]:
    """Replay, retrain, ask and score (see the module docstring). ``client`` has the
    service's base URL (or an in-process ASGI transport)."""
    seconds: dict[str, float] = {}
    split = prep.splits[phase]
    t0 = time.perf_counter()
    items = [catalog.to_dict(i) for i in prep.items]
    for start in range(0, len(items), ITEM_BATCH):
        await _post(client, "/v1/items", {"items": items[start : start + ITEM_BATCH]})
    seconds["catalog upsert"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    events = replayed_events(prep, phase)
    dicts = []
    for e in events:
        d = codec.to_dict(e)
        d["user_id"], d["event_id"] = prefix + e.user_id, prefix + e.event_id
        dicts.append(d)
    gate = asyncio.Semaphore(concurrency)

    async def send(batch: list[dict[str, Any]]) -> None:
        async with gate:
            await _post(client, "/v1/events", {"events": batch})

    # Batches in time order, a few at a time: a user's events land in order within a batch,
    # and the fold is order-independent across batches anyway.
    await asyncio.gather(*(send(dicts[s : s + EVENT_BATCH])
                           for s in range(0, len(dicts), EVENT_BATCH)))
    seconds["event replay"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    space = (await client.get("/v1/item-space")).json()
    if space.get("enabled"):
        space = await _post(client, "/v1/item-space/retrain", {})
    seconds["item-space retrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()

    async def ask(case_index: int) -> tuple[float, ...]:
        case = split.cases[case_index]
        targets = set(case.targets)
        exclude = [i for i in split.history_items(case) if i not in targets]
        async with gate:
            resp = await client.get(
                f"/v1/users/{prefix}{case.user_id}/recommendations",
                params={"k": TOP_K, "exclude": exclude}, timeout=120,
            )
        resp.raise_for_status()
        listed = [i["item_id"] for i in resp.json()["items"]]
        return tuple(float(listed.index(t)) if t in listed else float(TOP_K)
                     for t in case.targets)

    ranks = list(await asyncio.gather(*(ask(i) for i in range(len(split.cases)))))
    seconds["recommendations"] = time.perf_counter() - t0
    served = {name: float(np.mean(v)) for name, v in per_user_metrics(ranks, KS).items()}
    return {"metrics": served, "cases": len(split.cases), "events": len(events),
            "item_space": space, "seconds": seconds}


def offline_reference(
    prep: Prepared, params: PortraitParams, collab: CollabSettings | None, phase: str = "test"
) -> dict[str, dict[str, float]]:
    """The same configuration, most-popular and item-kNN, offline on the same split."""
    ph = prep.phase(phase, collab)
    systems: list[System] = [
        ph.factory.system("portrait", params),
        MostPopular("most-popular"),
        ItemKNN(ph.incidence, prep.item_ids, 100, "item-knn"),
    ]
    result = run(ph.split, systems, prep.item_ids, top_k=TOP_K)
    return {name: {m: float(np.mean(v)) for m, v in metrics.items()}
            for name, metrics in result.metrics(KS).items()}


def served_report(served: dict[str, Any], offline: dict[str, dict[str, float]],
                  names: Sequence[str] = ("HR@10", "NDCG@10", "NDCG@20", "MRR")) -> str:
    """A Markdown table: served vs offline, the gap, and the baselines' ratios."""
    lines = ["| metric | served | offline | served / offline | served / most-popular | "
             "served / item-kNN |", "|---|---|---|---|---|---|"]
    for m in names:
        s, o = served["metrics"][m], offline["portrait"][m]
        pop, knn = offline["most-popular"][m], offline["item-knn"][m]
        lines.append(f"| {m} | {s:.4f} | {o:.4f} | {s / o if o else 0:.3f} | "
                     f"{s / pop if pop else 0:.2f}x | {s / knn if knn else 0:.2f}x |")
    return "\n".join(lines)
