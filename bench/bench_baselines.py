"""The tuned baselines alone on one data set: no encoder, no Portrait, no SASRec.

The evaluation's own path for its baselines (``portrait evaluate`` without the text vectors
that Portrait needs): the default split (leave-last-out), the baselines' grid on VALIDATION
(``tune_baselines``), refit on the test phase's training events (``baseline_systems``), one
runner pass on TEST, full-catalog ranking with the history excluded. Prints NDCG@10, HR@10
and MRR per system and the paired bootstrap interval of EASE against each other baseline; the
figures equal the baseline rows of ``portrait evaluate`` on the same data set.

    .venv/bin/python bench/bench_baselines.py [--dataset movielens] [--out FILE.json]
    ./dev bench baselines ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ranking_report import print_test_table  # noqa: E402

from portrait.collaborative import interactions  # noqa: E402
from portrait.evaluation.baseline_tuning import baseline_systems, tune_baselines  # noqa: E402
from portrait.evaluation.runner import run  # noqa: E402
from portrait.evaluation.splits import leave_last_out  # noqa: E402
from storage.datasets import DATASET_NAMES, load_dataset  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=[n for n in DATASET_NAMES if n != "generic"],
                    default="movielens")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    val, test = leave_last_out(ds.events)
    item_ids = [i.item_id for i in ds.items]
    timings["load + split"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    choice = tune_baselines(val, interactions(val.train_events, item_ids).matrix, item_ids)
    timings["baseline grid (validation)"] = time.perf_counter() - t0
    print(f"chosen on validation: {choice.to_dict()}", flush=True)
    for name, candidate in choice.candidates().items():
        print(f"  {name} validation NDCG@10 {choice.validation[candidate]['NDCG@10']:.4f}")
    t0 = time.perf_counter()
    systems = baseline_systems(choice, interactions(test.train_events, item_ids).matrix, item_ids)
    timings["baselines fit (test)"] = time.perf_counter() - t0

    result = run(test, systems, item_ids)
    timings["test replay"] = result.seconds
    table, paired = print_test_table(result, len(test.cases), "ease", seed=args.seed)
    print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "dataset": ds.name, "split": "leave-last-out", "test": table,
            "paired_ndcg10_ease_minus": paired, "baselines": choice.to_dict(),
            "validation": choice.validation, "timings": timings,
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
