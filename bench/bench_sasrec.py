"""SASRec (offline/sasrec.py, tuned by offline/sasrec_tuning.py) against the baselines, and
optionally Portrait, on one data set.

The evaluation's default split (leave-last-out) of ``--dataset`` (any name of the data-set
registry: the bundled MovieLens, the Amazon sets), the same runner, full-catalog ranking with
the history excluded:

1. the baselines' grid on VALIDATION (``tune_baselines``), refit on the test phase's events;
2. SASRec tuned on VALIDATION (``tune_sasrec``: successive halving over ``GRID``, early
   stopping on validation NDCG@10); ``sasrec`` is the validation-selected model (the paper's
   protocol), ``sasrec-refit`` the chosen configuration retrained from scratch on the test
   phase's training events for the chosen number of epochs (``--no-refit`` skips it);
3. with ``--portrait-config FILE``, Portrait under that tuned config (item text vectors from
   the encoder cache; vLLM starts on a cache miss, after the SASRec timings);
4. one runner pass on TEST with every system; NDCG@10, HR@10, MRR and paired bootstrap
   intervals of SASRec against each other system.

    .venv/bin/python bench/bench_sasrec.py [--dataset movielens] [--threads 2] [--budget 8]
        [--portrait-config configs/tuned-movielens.json] [--out out/sasrec-movielens.json]
    ./dev bench sasrec ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from ranking_report import print_test_table  # noqa: E402

from offline.sasrec_tuning import GRID, tune_sasrec  # noqa: E402
from portrait.collaborative import interactions  # noqa: E402
from portrait.evaluation.baseline_tuning import baseline_systems, tune_baselines  # noqa: E402
from portrait.evaluation.runner import run  # noqa: E402
from portrait.evaluation.splits import leave_last_out  # noqa: E402
from portrait.progress import on_bar  # noqa: E402
from storage.datasets import DATASET_NAMES, load_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=[n for n in DATASET_NAMES if n != "generic"],
                    default="movielens")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--budget", type=int, default=8, help="SASRec configurations raced")
    ap.add_argument("--min-epochs", type=int, default=4)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-refit", action="store_true", help="skip sasrec-refit")
    ap.add_argument("--portrait-config", type=Path, default=None)
    ap.add_argument("--cache-dir", type=Path, default=ROOT / ".portrait" / "cache")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    ds = load_dataset(args.dataset)
    val, test = leave_last_out(ds.events)
    item_ids = [i.item_id for i in ds.items]
    timings["load + split"] = time.perf_counter() - t0
    print(f"{ds.name}: {len(item_ids)} items, {len(val.cases)} validation / "
          f"{len(test.cases)} test cases; torch threads {torch.get_num_threads()}", flush=True)

    t0 = time.perf_counter()
    inc_val = interactions(val.train_events, item_ids).matrix
    choice = tune_baselines(val, inc_val, item_ids)
    systems = baseline_systems(choice, interactions(test.train_events, item_ids).matrix, item_ids)
    timings["baselines: validation grid + test fit"] = time.perf_counter() - t0
    print(f"baselines chosen on validation: {choice.to_dict()}", flush=True)
    chosen = choice.candidates()
    print("  their validation NDCG@10: " + ", ".join(
        f"{n} {choice.validation[c]['NDCG@10']:.4f}" for n, c in chosen.items()), flush=True)

    from tqdm import tqdm

    bar = tqdm(desc="tune SASRec (validation)", unit="eval", file=sys.stderr, leave=False)

    tuning = tune_sasrec(
        val, item_ids, budget=args.budget, seed=args.seed, min_epochs=args.min_epochs,
        max_epochs=args.max_epochs, progress=on_bar(bar),
        refit_events=None if args.no_refit else test.train_events,
    )
    bar.close()
    timings["SASRec tuning (validation)"] = tuning.seconds
    timings["SASRec refit (test phase events)"] = tuning.refit_seconds
    epoch_s = tuning.epoch_seconds
    print(f"SASRec tuning {tuning.seconds:.0f}s ({len(epoch_s)} epochs, mean "
          f"{sum(epoch_s) / len(epoch_s):.1f}s/epoch incl. all configs), refit "
          f"{tuning.refit_seconds:.0f}s", flush=True)
    for t in sorted(tuning.trials, key=lambda t: -t.objective):
        mean_ep = t.seconds / max(t.epochs_trained, 1)
        print(f"  {t.values}  best val NDCG@10 {t.objective:.4f} at epoch {t.best_epoch}"
              f" / {t.epochs_trained} ({t.stopped}; {mean_ep:.1f}s per epoch incl. eval)")
    print(f"chosen: {tuning.params.to_dict()}  validation NDCG@10 "
          f"{tuning.validation_metrics['NDCG@10']:.4f}", flush=True)
    systems.append(tuning.system)
    if tuning.refit is not None:
        systems.append(tuning.refit)

    if args.portrait_config is not None:
        from offline.documents import portrait_params, read_tuned_config
        from offline.prepare import prepare
        from portrait.evaluation.roster import REFERENCE

        t0 = time.perf_counter()
        try:
            config = read_tuned_config(args.portrait_config)
            params, collab = portrait_params(config)
            prep = prepare(args.dataset, None, cache_dir=args.cache_dir, dataset=ds)
            assert prep.item_ids == item_ids
            phase = prep.phase("test", collab)
            systems.append(phase.factory.system(REFERENCE, params))  # the tuned blend
            val_m = config.metadata.get("validation_metrics", {}).get("NDCG@10")
            print(f"Portrait from {args.portrait_config} (validation NDCG@10 {val_m})", flush=True)
        except Exception as exc:  # the SASRec figures stand without Portrait
            print(f"Portrait skipped: {type(exc).__name__}: {exc}", flush=True)
        timings["Portrait: vectors + test phase"] = time.perf_counter() - t0

    result = run(test, systems, item_ids)
    timings["test replay (all systems)"] = result.seconds
    table, paired = print_test_table(result, len(test.cases), "sasrec")
    print("timings: " + ", ".join(f"{k} {v:.0f}s" for k, v in timings.items()))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "dataset": ds.name, "split": "leave-last-out", "threads": args.threads,
            "grid": {k: list(v) for k, v in GRID.items()},
            "sasrec": tuning.summary(), "test": table, "paired_ndcg10": paired,
            "baselines": choice.to_dict(), "timings": timings,
        }, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
