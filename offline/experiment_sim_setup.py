"""The two systems the simulated online experiment runs (see :mod:`offline.online_simulation`):
the same users, catalog and item space, one serving an A/B split of two variants, one an
interleaving of them, in process on memory stores. Shared by the simulation test and
``bench/bench_experiments.py``."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from actors.text_features import ThreadedEncoder
from offline.online_simulation import history, load, report_for, simulate, users_to_significance
from offline.prepare import Prepared, prepare
from offline.served import ITEM_BATCH, _post
from portrait import catalog
from portrait.default_config import default_config
from portrait.evaluation.runner import run
from portrait.evaluation.tuning import PortraitParams
from portrait.ports import AppendRequest
from serve.composition import in_process
from serve.settings import Settings
from storage.stores import forget_memory

K = 10
CONTROL, TREATMENT = "popular", "tuned"


def write_configs(folder: Path, mode: str) -> Path:
    """The shipped tuned config against the same with popularity-only ranking (it folds
    profiles alike, so the two can also be interleaved)."""
    tuned = default_config()
    (folder / "tuned.json").write_text(json.dumps(tuned.to_document()))
    popular = dataclasses.replace(tuned, ranking=dataclasses.replace(
        tuned.ranking, popularity_weight=1000.0, cold_start_events=1e9, tag_weight=0.0))
    (folder / "popular.json").write_text(json.dumps(popular.to_document()))
    path = folder / f"experiment-{mode}.json"
    path.write_text(json.dumps({"name": f"sim-{mode}", "mode": mode,
                                "split": {CONTROL: 1, TREATMENT: 1},
                                "variants": {CONTROL: "popular.json", TREATMENT: "tuned.json"}}))
    return path


def offline_hit_rates(prep: Prepared, users: set[str]) -> dict[str, float]:
    """HR@K of both variants offline, on the same users' test cases."""
    tuned = default_config()
    popular_ranking = dataclasses.replace(tuned.ranking, popularity_weight=1000.0,
                                          cold_start_events=1e9, tag_weight=0.0)
    phase = prep.phase("test", tuned.item_vectors.collaborative)
    split = dataclasses.replace(phase.split,
                                cases=tuple(c for c in phase.split.cases if c.user_id in users))
    systems = [phase.factory.system(TREATMENT, PortraitParams(tuned.profile, tuned.ranking,
                                                              tuned.item_vectors.alpha)),
               phase.factory.system(CONTROL, PortraitParams(tuned.profile, popular_ranking,
                                                            tuned.item_vectors.alpha))]
    result = run(split, systems, prep.item_ids, top_k=K)
    return {name: float(np.mean(m[f"HR@{K}"])) for name, m in result.metrics((K,)).items()}



async def run_experiment(
    prep: Prepared, encoder: Any, folder: Path, mode: str, users: list[str], secret_key: bytes,
    headers: Any,
) -> dict[str, Any]:
    """Load the catalog and the users' histories, retrain the item space, simulate, and
    return the full report and the users needed for significance."""
    url = f"memory://experiment-sim-{mode}"
    settings = Settings(shards=2, experiment=write_configs(folder, mode),
                        retrain_every_events=10**9, catalog_refresh_s=3600.0)
    system = in_process(settings, url, ThreadedEncoder(encoder), secret_key=secret_key)
    seconds: dict[str, float] = {}
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     headers=await headers(system)) as client:
            t0 = time.perf_counter()
            items = [catalog.to_dict(i) for i in prep.items]
            for start in range(0, len(items), ITEM_BATCH):
                await _post(client, "/v1/items", {"items": items[start:start + ITEM_BATCH]})
            # History goes straight into the log (a bulk import); only the test period, the
            # served lists and what users did with them, goes through the API.
            prefix = f"{mode}:"
            past = history(prep, prefix)
            await system.context.stores.events.append_many(
                [AppendRequest(u, evs) for u, evs in past.items()])
            await _post(client, "/v1/item-space/retrain", {})
            seconds["setup"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            await simulate(prep, client, users, prefix=prefix, k=K)
            seconds["simulate"] = time.perf_counter() - t0
            full = (await client.get(f"/v1/experiments/sim-{mode}/report")).json()
        t0 = time.perf_counter()
        stores = system.context.stores
        served, attribution = await load(stores.impressions, stores.events, f"sim-{mode}")
        order = [prefix + u for u in users]
        size = full["catalog_size"]
        needed = users_to_significance(f"sim-{mode}", served, attribution, order, size,
                                       (CONTROL, TREATMENT))
        seconds["sweep"] = time.perf_counter() - t0
        assert report_for(f"sim-{mode}", served, attribution, set(order), size,
                          (CONTROL, TREATMENT))["variants"] == full["variants"]
        return {"report": full, "users_needed": needed, "seconds": seconds}
    finally:
        await system.close()
        forget_memory(url)


def prepared(encoder: Any, split_kind: str = "leave-last-out") -> Prepared:
    return prepare("movielens", None, encoder=encoder, split_kind=split_kind)


def user_order(prep: Prepared, n: int, seed: int = 0) -> list[str]:
    users = sorted(c.user_id for c in prep.splits["test"].cases)
    random.Random(seed).shuffle(users)
    return users[:n]
