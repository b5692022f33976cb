"""The learned ranker's cost against the linear blend's, measured in the same run.

On ml-latest-small (the test phase of the evaluation's leave-last-out split, the shipped
tuned config, its blended item space of 9,742 items), one thread as a shard actor has:

* training the ranker (retrievers' neighbours, features, LightGBM with early stopping) from
  the split's training events, seconds (the retrain's share; target: item space + ranker
  <= 90 s, the item space's own time is printed by ``./dev bench retrain``);
* a recommendation of 10 items with reasons for each of ``--users`` profiles: the blend
  (``portrait.ranking.recommend``, the baseline) and the two-stage path
  (``portrait.two_stage.recommend_learned``: six retrievers, features, the GBDT and the path
  credits of the ten shown items), p50/p90 and their ratio. Target: <= 4 ms p50 inside the
  shard, where the blend took 3.65 ms; so the ratio to the blend is the figure to read on a
  noisy machine.

    ./dev bench ranker [--users 300]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from offline.documents import portrait_params, read_tuned_config
from offline.prepare import prepare
from portrait.evaluation.splits import stream_key, user_streams
from portrait.evaluation.two_stage_system import TwoStageSystem
from portrait.events import RecordedEvent
from portrait.fold import fold
from portrait.learned_ranker import RankerSettings
from portrait.profile import ProfileState
from portrait.ranking import popularity_scores, recommend
from portrait.two_stage import recommend_learned
from storage.datasets.paths import repo_root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--config", default="configs/tuned-movielens.json")
    args = parser.parse_args()
    params, collab = portrait_params(read_tuned_config(args.config))
    phase = prepare("movielens", None, cache_dir=repo_root() / ".portrait" / "cache").phase(
        "test", collab
    )
    portrait = phase.factory.system("portrait", params)
    began = time.perf_counter()
    system = TwoStageSystem.trained("two-stage", portrait, phase.split, RankerSettings())
    train_s = time.perf_counter() - began
    popularity = popularity_scores(np.asarray(phase.incidence).sum(axis=0))
    ctx = system.context.with_popularity(popularity)
    states = []
    for user, events in list(user_streams(phase.split.train_events).items())[: args.users]:
        ordered = sorted(events, key=stream_key)
        state = ProfileState(user, portrait.items.text_dim)
        recs = [RecordedEvent(i + 1, i + 1, e.occurred_at, e) for i, e in enumerate(ordered)]
        states.append(fold(state, recs, portrait.profile, portrait.items, portrait.texts))

    def blend(s: ProfileState) -> object:
        return recommend(s, portrait.profile, portrait.ranking, portrait.items,
                         portrait.tag_table, 10, popularity=popularity)

    def learned(s: ProfileState) -> object:
        return recommend_learned(s, portrait.profile, portrait.ranking, ctx, system.ranker, 10)

    timings: dict[str, list[float]] = {"blend": [], "learned": []}
    with threadpool_limits(1):  # a shard actor ranks on one thread
        for _ in range(2):  # interleaved rounds: load on the machine hits both alike
            for name, fn in (("blend", blend), ("learned", learned)):
                for s in states:
                    t0 = time.perf_counter()
                    fn(s)
                    timings[name].append((time.perf_counter() - t0) * 1e3)
    b50 = statistics.median(timings["blend"])
    l50 = statistics.median(timings["learned"])
    m = system.bundle.metrics
    print(f"\nml-latest-small test phase, {len(states)} profiles, one thread")
    print(f"  ranker training: {train_s:.1f} s ({int(m['groups'])} groups, "
          f"{int(m['rounds'])} rounds, validation NDCG@10 {m['validation_ndcg10']:.4f}, "
          f"candidate recall {m['candidate_recall']:.3f})")
    for name in ("blend", "learned"):
        t = timings[name]
        print(f"  {name:<8} p50 {statistics.median(t):6.2f} ms   "
              f"p90 {np.percentile(t, 90):6.2f} ms")
    print(f"  learned / blend p50: {l50 / b50:.2f}x (the blend took 3.65 ms inside a shard; "
          f"target <= 4 ms there, i.e. <= {4 / 3.65:.2f}x)")


if __name__ == "__main__":
    main()
