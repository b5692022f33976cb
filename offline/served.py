"""The served-path evaluation: the same split and metrics as the offline run, over HTTP.

A running service gets the evaluation's catalog, then each test user's events before their
test case (exactly what the offline run folds; no event after a case's cutoff is sent), then
is asked to retrain: the retrain builds the collaborative item space and trains the learned
ranker beside it, and only then does the service rank with the two-stage system (before, and
when the ranker is refused, it serves the blend). Each test user's top K is then asked for over
HTTP and scored with the offline metrics, and each response's ``ranker`` is counted, so the
report says which ranker the served figure is of.

The offline reference is the evaluation's ``portrait`` row as the service would train it: the
two-stage system (:class:`~portrait.evaluation.two_stage_system.TwoStageSystem`) over the same
profile and ranking configuration, its ranker trained on the split's training events with the
service's ranker settings (``PORTRAIT_RANKER_*``, read by this command as by the service:
set them alike for both), plus the blend (``portrait-blend``) as a second row and the popularity and
item-kNN baselines.

Differences that remain by design: the service's popularity prior counts every replayed event
(offline counts those up to each case's horizon), and its collaborative vectors and ranker are
trained on the events it holds (the test users' events before their cases; offline: the
split's training events, the same events for leave-last-out when every user is evaluated),
in its own order (same model and settings). Ranks are read from a top-K list: a target below K
counts as a miss, so MRR is MRR@K.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import numpy as np

from offline.prepare import Prepared
from portrait import catalog, codec
from portrait.evaluation.baselines import ItemKNN, MostPopular
from portrait.evaluation.metrics import PairedDifference, paired_bootstrap, per_user_metrics
from portrait.evaluation.roster import BLEND, REFERENCE
from portrait.evaluation.runner import System, run
from portrait.evaluation.summary import KS
from portrait.evaluation.tuning import PortraitParams
from portrait.evaluation.two_stage_system import TwoStageSystem
from portrait.events import Event
from portrait.item_space import CollabSettings
from portrait.learned_ranker import NotEnoughTraining, RankerSettings

TOP_K = 50
ITEM_BATCH = 500
EVENT_BATCH = 500
RETRIES = 30
PAIRED = ("HR@10", "NDCG@10")  # the metrics compared per user


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
    space = await retrain(client)
    seconds["item-space retrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()

    rankers: Counter[str] = Counter()

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
        body = resp.json()
        rankers[str(body.get("ranker"))] += 1
        listed = [i["item_id"] for i in body["items"]]
        return tuple(float(listed.index(t)) if t in listed else float(TOP_K)
                     for t in case.targets)

    ranks = list(await asyncio.gather(*(ask(i) for i in range(len(split.cases)))))
    seconds["recommendations"] = time.perf_counter() - t0
    served = {name: float(np.mean(v)) for name, v in per_user_metrics(ranks, KS).items()}
    return {"metrics": served, "cases": len(split.cases), "events": len(events),
            "item_space": space, "rankers": dict(sorted(rankers.items())),
            "ranks": [list(r) for r in ranks], "seconds": seconds}


async def retrain(client: httpx.AsyncClient) -> dict[str, Any]:
    """Ask the service to retrain now (the item space and, with it, the learned ranker) and
    return its item-space state: ``ranker_trained`` and ``ranker_skipped_reason`` say whether
    the two-stage system will serve.

    Always asked: the ranker serves whatever the blend's configuration. A service that does not
    retrain (no variant uses collaborative vectors, so it trains no ranker either) answers
    ``{"enabled": false, "reason": ...}`` and serves the blend; that is what is returned."""
    resp = await client.post("/v1/item-space/retrain", json={}, timeout=600)
    if resp.status_code in (400, 422):
        space = (await client.get("/v1/item-space")).json()
        if not space.get("enabled", True):
            return dict(space)
    if resp.status_code == 503:
        return dict(await _post(client, "/v1/item-space/retrain", {}))
    if resp.status_code >= 400:
        raise RuntimeError(f"/v1/item-space/retrain: {resp.status_code} {resp.text[:300]}")
    return dict(resp.json())


def ranker_counts(rankers: Mapping[str, int]) -> tuple[int, int, int]:
    """``(learned, blend, other)``: how many responses each kind of ranker ranked."""
    learned = sum(n for r, n in rankers.items() if r.startswith("learned:"))
    blend = rankers.get("blend", 0)
    return learned, blend, sum(rankers.values()) - learned - blend


def ranker_line(space: Mapping[str, Any]) -> str:
    """The retrain's outcome for the ranker, in words."""
    if not space.get("enabled", False):
        return f"no retrain, no learned ranker: {space.get('reason', 'retraining is off')}"
    version = space.get("version", "-")
    if space.get("ranker_trained"):
        m = space.get("ranker_metrics") or {}
        figures = ", ".join(f"{k} {v:.4g}" for k, v in m.items()
                            if k in ("groups", "rounds", "validation_ndcg10", "candidate_recall"))
        return f"item space {version}: ranker trained ({figures})"
    reason = space.get("ranker_skipped_reason") or space.get("last_error") or "no reason given"
    return f"item space {version}: ranker NOT trained ({reason}); the blend serves"


def offline_reference(
    prep: Prepared,
    params: PortraitParams,
    collab: CollabSettings | None,
    ranker: RankerSettings | None,
    phase: str = "test",
) -> dict[str, Any]:
    """The same configuration offline on the same split: the two-stage system (``portrait``,
    trained with ``ranker``: the service's settings), the blend (``portrait-blend``),
    most-popular and item-kNN. Without ``ranker`` (the service's is off), or when training is
    refused, ``portrait`` is the blend, as the service would serve it; ``"ranker"`` says
    which, with the training figures or the reason."""
    ph = prep.phase(phase, collab)
    blend = ph.factory.system(BLEND, params, state_cache={})
    reference: System = ph.factory.system(REFERENCE, params)
    info: dict[str, Any] = {"reference": "blend", "settings": None, "metrics": {},
                            "reason": "the service's ranker is off"}
    if ranker is not None:
        info["settings"] = ranker.to_dict()
        try:
            two_stage = TwoStageSystem.trained(REFERENCE, blend, ph.split, ranker)
        except NotEnoughTraining as exc:
            info["reason"] = str(exc)
        else:
            reference = two_stage
            info.update(reference="two-stage", reason=None,
                        metrics=dict(two_stage.bundle.metrics))
    systems: list[System] = [
        reference,
        blend,
        MostPopular("most-popular"),
        ItemKNN(ph.incidence, prep.item_ids, 100, "item-knn"),
    ]
    result = run(ph.split, systems, prep.item_ids, top_k=TOP_K)
    per_case = result.metrics(KS)
    metrics = {name: {m: float(np.mean(v)) for m, v in per.items()}
               for name, per in per_case.items()}
    # per case, in the split's order (as the served ranks): the paired comparison's input
    paired = {name: {m: [float(x) for x in per_case[name][m]] for m in PAIRED}
              for name in (REFERENCE, BLEND)}
    return {"metrics": metrics, "per_case": paired, "ranker": info}


def paired_gap(
    served: Mapping[str, Any], offline: Mapping[str, Any], system: str = REFERENCE,
    metric: str = "NDCG@10", resamples: int = 2000,
) -> PairedDifference:
    """Served minus offline ``system``, the same test users paired (bootstrap over users):
    whether a gap is more than the noise of one split's users."""
    ranks = [tuple(r) for r in served["ranks"]]
    a = per_user_metrics(ranks, KS)[metric]
    b = np.asarray(offline["per_case"][system][metric])
    return paired_bootstrap(a, b, resamples, seed=0)


def served_report(served: Mapping[str, Any], offline: Mapping[str, Any],
                  names: Sequence[str] = ("HR@10", "NDCG@10", "NDCG@20", "MRR")) -> str:
    """A Markdown table: served vs the offline two-stage system (the gap) and vs the blend,
    the baselines' ratios; then which ranker ranked the served responses and the offline
    reference."""
    ref = offline["metrics"]
    label = "two-stage" if offline["ranker"]["reference"] == "two-stage" else "= blend"
    lines = [f"| metric | served | offline portrait ({label}) | served / offline | "
             "offline blend | served / blend | served / most-popular | served / item-kNN |",
             "|---|---|---|---|---|---|---|---|"]
    for m in names:
        s, o, b = served["metrics"][m], ref[REFERENCE][m], ref[BLEND][m]
        pop, knn = ref["most-popular"][m], ref["item-knn"][m]
        lines.append(f"| {m} | {s:.4f} | {o:.4f} | {_ratio(s, o):.3f} | {b:.4f} | "
                     f"{_ratio(s, b):.3f} | {_ratio(s, pop):.2f}x | {_ratio(s, knn):.2f}x |")
    gap = paired_gap(served, offline)
    rel = gap.relative
    lines += ["", f"Served / offline portrait NDCG@10, users paired: {rel.mean + 1:.3f} "
              f"(95% bootstrap CI {rel.low + 1:.3f} to {rel.high + 1:.3f}); difference "
              f"{gap.diff.mean:+.4f} [{gap.diff.low:+.4f}, {gap.diff.high:+.4f}]."]
    learned, blend, other = ranker_counts(served["rankers"])
    total = learned + blend + other
    lines += [f"Served responses ranked by the learned ranker (learned:*): {learned} of "
              f"{total}; by the blend: {blend}" + (f"; other: {other}" if other else "") + ".",
              f"Service: {ranker_line(served['item_space'])}.",
              f"Offline portrait: {_offline_line(offline['ranker'])}."]
    return "\n".join(lines)


def _offline_line(info: Mapping[str, Any]) -> str:
    if info["reference"] == "two-stage":
        m = info["metrics"]
        return (f"two-stage, ranker trained on the split's training events "
                f"({int(m.get('groups', 0))} groups, validation NDCG@10 "
                f"{m.get('validation_ndcg10', float('nan')):.4f}; candidates "
                f"{info['settings']['candidates']} per retriever, as the service)")
    return f"the blend ({info['reason']})"


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0
