"""Retraining the collaborative item space: seconds per stage and peak memory, against a baseline.

    ./dev bench retrain [--synthetic-events 1000000] [--synthetic-items 10000]
    ./dev bench retrain --synthetic-items 1000000 --synthetic-events 10000000   # issue 24

(a) ml-latest-small's 100,836 ratings, appended to the in-memory event log; (b) a synthetic log
(power-law item popularity, ``1 / rank^0.8``; each user half in one of 50 taste clusters, half
anywhere; 50 events a user unless ``--synthetic-users`` says otherwise), served page by page
by :class:`SyntheticLog` from two int32 arrays, as a database would, so the log itself does
not hold millions of event objects in the measured process. Each is retrained with the
service's ItemSpaceTrainer (log read, co-occurrence, sparse SPPMI, eigendecomposition, save)
with a progress bar per stage; the seconds of each stage and the retrain's peak RSS (the
kernel's high-water mark, reset just before it) are printed. (b) embeds every item with
enough users (``max_items`` raised to the synthetic catalog's size unless ``--max-items``).
(a) also trains the learned ranker as the service's retrain does (its
RankerTrainer with the shipped settings and variant, over the MovieLens catalog's text
vectors from the evaluation's cache, which the service would read from its catalog), and
the ranker's share of the time is printed; (b)'s items are not in a catalog, so it trains the
item space alone. The baseline measured in the same run is one pass of the log read alone
(what any retrain must at least do), so the ratio says what training adds on this machine.
Targets: (a) item space + ranker under 90 s, (b) 1M events under 10 minutes, 10M events
over 1M items under 15 minutes (issue 24).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import resource
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.item_space_trainer import ItemSpaceTrainer, LogReader  # noqa: E402
from actors.ranker_trainer import RankerOutcome, RankerTrainer  # noqa: E402
from portrait.default_config import default_config  # noqa: E402
from portrait.events import Event, ItemViewed, RecordedEvent  # noqa: E402
from portrait.item_space import CollabSettings, ItemSpace  # noqa: E402
from portrait.items import ItemIndex  # noqa: E402
from portrait.ports import TextFeatures  # noqa: E402
from portrait.progress import Bar, Progress, stage_bars  # noqa: E402
from storage.item_spaces import InMemoryItemSpaceStore  # noqa: E402
from storage.memory import InMemoryEventLog  # noqa: E402


def synthetic(
    n_events: int, n_users: int, n_items: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(user, item) of each event, users' events consecutive, int32: half of a user's
    events drawn from their taste cluster, half from the whole catalog, both by popularity
    ``1 / rank^0.8`` (vectorised inverse-CDF draws, a few seconds at 10M events)."""
    rng = np.random.default_rng(seed)
    clusters = 50
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    cluster_of = rng.integers(0, clusters, n_items)
    user_cluster = rng.integers(0, clusters, n_users)
    per_user = max(1, n_events // n_users)
    users = np.repeat(np.arange(n_users, dtype=np.int32), per_user)
    own = np.tile(np.arange(per_user) < per_user // 2, n_users)
    # anywhere: the catalog's CDF
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]
    items = np.searchsorted(cdf, rng.random(users.size)).astype(np.int64)
    # in the user's cluster: items sorted by cluster, each cluster's CDF shifted by its number
    by_cluster = np.argsort(cluster_of, kind="stable")
    sorted_cluster = cluster_of[by_cluster]
    weights = popularity[by_cluster]
    ends = np.searchsorted(sorted_cluster, np.arange(clusters), side="right")
    starts = np.searchsorted(sorted_cluster, np.arange(clusters), side="left")
    csum = np.cumsum(weights)
    before = np.where(starts > 0, csum[np.maximum(starts - 1, 0)], 0.0)
    totals = csum[ends - 1] - before
    local = (csum - before[sorted_cluster]) / totals[sorted_cluster] + sorted_cluster
    c = user_cluster[users[own]]
    pos = np.searchsorted(local, c + rng.random(c.size))
    items[own] = by_cluster[np.clip(pos, starts[c], ends[c] - 1)]
    return users, np.minimum(items, n_items - 1).astype(np.int32)


class SyntheticLog:
    """The read side of an event log over :func:`synthetic`'s arrays: ``read_all`` builds
    each page's events on demand, as a database returns rows, so the log costs 8 bytes an
    event here rather than an object each."""

    def __init__(self, users: np.ndarray, items: np.ndarray) -> None:
        self.users, self.items = users, items

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        lo, hi = after_position, min(after_position + limit, self.users.size)
        return [
            RecordedEvent(0, p + 1, 0.0, ItemViewed(f"e{p}", f"u{u}", float(p), f"i{i}"))
            for p, u, i in zip(range(lo, hi), self.users[lo:hi].tolist(),
                               self.items[lo:hi].tolist(), strict=True)
        ]


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


class StageClock:
    """Seconds per named stage of a retrain, from its stage callbacks (stages run one after
    another, so a stage ends with its last report and the next begins there), drawing a bar
    for each."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = time.perf_counter()
        self.last: dict[str, float] = {}
        self._bars = stage_bars(self._bar)

    def _bar(self, stage: str, total: int) -> Bar:
        bar: Bar = tqdm(desc=f"{self.name}: {stage}", total=total, file=sys.stdout)
        return bar

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.last[stage] = time.perf_counter()
        self._bars(stage, done, total)

    def seconds(self, ended: float) -> dict[str, float]:
        out, before = {}, self.started
        for stage, at in self.last.items():
            out[stage], before = at - before, at
        out["save"] = ended - before
        return out


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def rss_mib() -> float:
    """This process's resident memory now (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """VmHWM (since the last reset), else the process's max RSS."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(
    name: str, log: LogReader, collab: CollabSettings, ranker: TimedRanker | None = None
) -> dict[str, float]:
    t0 = time.perf_counter()
    after, n = 0, 0
    while page := await log.read_all(after_position=after, limit=20_000):
        n += len(page)
        after = page[-1].position
    read_s = time.perf_counter() - t0
    trainer = ItemSpaceTrainer(log, InMemoryItemSpaceStore(), collab, ranker=ranker)
    trainer.note_events(n)  # what the service would have counted: the read bar's total
    before_mib = rss_mib()
    reset = reset_peak_rss()
    clock = StageClock(name)
    space = await trainer.retrain(stages=clock)
    ended = time.perf_counter()
    seconds = ended - clock.started
    if space is None:
        raise SystemExit(f"{name}: {trainer.stats.last_error}")
    stages = clock.seconds(ended)
    print(f"{name}: " + ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()))
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
            "rss_before_mib": before_mib,
            "peak_rss_mib": peak_rss_mib() if reset else float("nan"),
            **{f"stage:{k}": v for k, v in stages.items()}}


async def movielens_log() -> InMemoryEventLog:
    from storage.datasets.movielens import load_movielens

    log = InMemoryEventLog()
    by_user: dict[str, list[Event]] = {}
    for e in load_movielens().events:
        by_user.setdefault(e.user_id, []).append(e)
    for user, evs in by_user.items():
        await log.append(user, evs)
    return log


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--synthetic-events", type=int, default=1_000_000)
    parser.add_argument("--synthetic-users", type=int, default=0,
                        help="default: one per 50 events")
    parser.add_argument("--synthetic-items", type=int, default=10_000)
    parser.add_argument("--max-items", type=int, default=0,
                        help="collaborative max_items for (b); default: the synthetic items")
    parser.add_argument("--skip-movielens", action="store_true")
    args = parser.parse_args()
    collab = default_config().item_vectors.collaborative
    assert collab is not None
    rows = []
    if not args.skip_movielens:
        ranker = movielens_ranker()
        log = asyncio.run(movielens_log())
        rows.append(("ml-latest-small + ranker",
                     asyncio.run(measure("movielens", log, collab, ranker)), 90.0))
        del log
    n_users = args.synthetic_users or max(1, args.synthetic_events // 50)
    users, items = synthetic(args.synthetic_events, n_users, args.synthetic_items)
    big = dataclasses.replace(collab, max_items=args.max_items or args.synthetic_items)
    target = 900.0 if args.synthetic_events > 1_000_000 else 600.0
    print(f"synthetic: {users.size:,} events, {n_users:,} users, {args.synthetic_items:,} items "
          f"({np.unique(items).size:,} reached); collaborative settings {big.to_dict()}")
    rows.append((f"synthetic {users.size:,}",
                 asyncio.run(measure("synthetic", SyntheticLog(users, items), big)), target))
    print(
        f"\n{'log':<26}{'events':>11}{'items':>10}{'dim':>5}{'retrain s':>11}"
        f"{'ranker s':>10}{'read s':>8}{'x read':>8}{'RSS before':>12}{'peak RSS':>10}  target"
    )
    for name, r, target in rows:
        ok = "met" if r["seconds"] < target else "MISSED"
        print(
            f"{name:<26}{r['events']:>11,.0f}{r['items']:>10,.0f}{r['dim']:>5.0f}"
            f"{r['seconds']:>11.1f}{r['ranker_s']:>10.1f}{r['read_s']:>8.2f}"
            f"{r['seconds'] / r['read_s']:>8.0f}"
            f"{r['rss_before_mib']:>12,.0f}{r['peak_rss_mib']:>10,.0f}  < {target:.0f} s: {ok}"
        )
    print("(RSS in MiB: before the retrain, with the log and data loaded; peak during it)")
    print("\nseconds per stage")
    for name, r, _ in rows:
        stages = {k.split(":", 1)[1]: v for k, v in r.items() if k.startswith("stage:")}
        print(f"{name:<26}" + "  ".join(f"{k} {v:.1f}" for k, v in stages.items()))


if __name__ == "__main__":
    main()
