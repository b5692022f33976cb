"""Retraining the collaborative item space: seconds and peak memory, against a baseline.

    ./dev bench retrain [--synthetic-events 1000000]

(a) ml-latest-small's 100,836 ratings, (b) a synthetic log (power-law item popularity, users
drawn towards taste clusters), each appended to the in-memory event log and retrained with
the service's ItemSpaceTrainer (log read, co-occurrence, SPPMI, eigendecomposition, save),
with a progress bar. (a) also trains the learned ranker as the service's retrain does (its
RankerTrainer with the shipped settings and variant, over the MovieLens catalog's text
vectors from the evaluation's cache, which the service would read from its catalog), and
the ranker's share of the time is printed; (b)'s items are not in a catalog, so it trains the
item space alone. The baseline measured in the same run is one pass of the log read alone
(what any retrain must at least do), so the ratio says what training adds on this machine.
Targets: (a) item space + ranker under 90 s, (b) 1M events under 10 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.item_space_trainer import ItemSpaceTrainer  # noqa: E402
from actors.ranker_trainer import RankerOutcome, RankerTrainer  # noqa: E402
from portrait.default_config import default_config  # noqa: E402
from portrait.events import Event, ItemViewed  # noqa: E402
from portrait.item_space import ItemSpace  # noqa: E402
from portrait.items import ItemIndex  # noqa: E402
from portrait.ports import TextFeatures  # noqa: E402
from portrait.progress import Progress, on_bar  # noqa: E402
from storage.item_spaces import InMemoryItemSpaceStore  # noqa: E402
from storage.memory import InMemoryEventLog  # noqa: E402


def synthetic(n_events: int, n_users: int, n_items: int, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    clusters = 50
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    cluster_of = rng.integers(0, clusters, n_items)
    user_cluster = rng.integers(0, clusters, n_users)
    per_user = n_events // n_users
    events: list[Event] = []
    members = [np.flatnonzero(cluster_of == c) for c in range(clusters)]
    for u in range(n_users):
        own = members[user_cluster[u]]
        k_own = per_user // 2
        picks = np.concatenate([
            rng.choice(own, k_own, p=popularity[own] / popularity[own].sum()),
            rng.choice(n_items, per_user - k_own, p=popularity / popularity.sum()),
        ])
        events += [ItemViewed(f"e{u}-{j}", f"u{u}", float(j), f"i{i}") for j, i in enumerate(picks)]
    return events


class CachedCatalog:
    """The ranker's sources: the MovieLens catalog's text index (from the evaluation's
    encoding cache); ratings have no text events, so there are no text features to read."""

    def __init__(self, index: ItemIndex) -> None:
        self.index = index

    async def catalog_index(self) -> ItemIndex:
        return self.index

    async def text_features(
        self, events: Iterable[Event]
    ) -> dict[str, dict[str, TextFeatures]]:
        return {}


class TimedRanker(RankerTrainer):
    """The service's ranker training, timed (the retrain's stats give only the total)."""

    seconds = 0.0

    async def train(
        self, events: Mapping[str, Sequence[Event]], space: ItemSpace,
        progress: Progress | None = None,
    ) -> RankerOutcome:
        t0 = time.perf_counter()
        try:
            return await super().train(events, space, progress)
        finally:
            self.seconds = time.perf_counter() - t0


def movielens_ranker() -> TimedRanker:
    """A ranker trainer as the shipped service builds it, over the MovieLens catalog."""
    from offline.prepare import prepare
    from serve.composition import ranker_policy
    from serve.settings import Settings
    from storage.datasets.paths import repo_root

    policy = ranker_policy(Settings())
    assert policy is not None, "the shipped settings train a ranker"
    prepared = prepare("movielens", None, cache_dir=repo_root() / ".portrait" / "cache")
    index = ItemIndex(prepared.item_ids, prepared.text_matrices["test"],
                      [i.tags for i in prepared.items], model_id=prepared.provider.model_id)
    return TimedRanker(policy, CachedCatalog(index))


async def measure(
    name: str, events: list[Event], ranker: TimedRanker | None = None
) -> dict[str, float]:
    log = InMemoryEventLog()
    by_user: dict[str, list[Event]] = {}
    for e in events:
        by_user.setdefault(e.user_id, []).append(e)
    for user, evs in by_user.items():
        await log.append(user, evs)
    t0 = time.perf_counter()
    after, n = 0, 0
    while page := await log.read_all(after_position=after, limit=20_000):
        n += len(page)
        after = page[-1].position
    read_s = time.perf_counter() - t0
    collab = default_config().item_vectors.collaborative
    assert collab is not None
    trainer = ItemSpaceTrainer(log, InMemoryItemSpaceStore(), collab, ranker=ranker)
    with tqdm(desc=f"{name}: co-occurrence blocks", unit="block") as bar:
        t0 = time.perf_counter()
        space = await trainer.retrain(on_bar(bar))
        seconds = time.perf_counter() - t0
    if space is None:
        raise SystemExit(f"{name}: {trainer.stats.last_error}")
    if ranker is not None:
        stats = trainer.stats
        m = stats.ranker_metrics
        outcome = (f"trained: {m.get('groups', 0):,.0f} groups of {m.get('users', 0):,.0f} "
                   f"labels, validation NDCG@10 {m.get('validation_ndcg10', float('nan')):.4f}, "
                   f"{m.get('rounds', 0):.0f} rounds" if stats.ranker_trained
                   else f"NOT trained: {stats.ranker_skipped_reason}")
        print(f"{name}: learned ranker {outcome}; {ranker.seconds:.1f} s of the retrain's "
              f"{seconds:.1f} s ({ranker.seconds / seconds:.0%})")
    return {"events": float(n), "items": float(len(space.item_ids)),
            "dim": float(space.vectors.shape[1]), "seconds": seconds, "read_s": read_s,
            "ranker_s": ranker.seconds if ranker is not None else float("nan"),
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic-events", type=int, default=1_000_000)
    parser.add_argument("--synthetic-users", type=int, default=20_000)
    parser.add_argument("--synthetic-items", type=int, default=10_000)
    args = parser.parse_args()
    from storage.datasets.movielens import load_movielens

    ranker = movielens_ranker()
    ml = asyncio.run(measure("movielens", list(load_movielens().events), ranker))
    rows = [("ml-latest-small + ranker", ml, 90.0)]
    events = synthetic(args.synthetic_events, args.synthetic_users, args.synthetic_items)
    rows.append((f"synthetic {len(events):,}", asyncio.run(measure("synthetic", events)), 600.0))
    print(
        f"\n{'log':<26}{'events':>10}{'items':>8}{'dim':>5}{'retrain s':>11}"
        f"{'ranker s':>10}{'read s':>8}{'x read':>8}{'peak RSS MiB':>14}  target"
    )
    for name, r, target in rows:
        ok = "met" if r["seconds"] < target else "MISSED"
        print(
            f"{name:<26}{r['events']:>10,.0f}{r['items']:>8,.0f}{r['dim']:>5.0f}"
            f"{r['seconds']:>11.1f}{r['ranker_s']:>10.1f}{r['read_s']:>8.2f}"
            f"{r['seconds'] / r['read_s']:>8.0f}"
            f"{r['peak_rss_mib']:>14,.0f}  < {target:.0f} s: {ok}"
        )


if __name__ == "__main__":
    main()
