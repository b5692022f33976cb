"""The three offline commands: ``evaluate``, ``tune`` and ``ab``.

Each takes the parsed arguments (:mod:`offline.cli`), an optional encoder (tests pass a
deterministic one instead of vLLM) and an optional loaded dataset, writes its files and prints
a short summary on stdout; progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from encoding.encoder_checkpoint import CheckpointMismatch, read_record, verify_checkpoint
from encoding.encoder_checkpoint import settings_for as checkpoint_settings
from encoding.settings import EncoderSettings
from offline.documents import portrait_params, read_tuned_config, tuned_config, write_json
from offline.fine_tuned_encoder import fine_tuned_systems, parse_seeds
from offline.plots import write_plots
from offline.prepare import Prepared, prepare
from offline.progress import run_with_progress, tune_with_progress
from offline.report import CAVEATS, ab_markdown, write_report
from portrait.ann import AnnSettings
from portrait.evaluation import ab
from portrait.evaluation.baseline_tuning import baseline_systems, tune_baselines
from portrait.evaluation.roster import REFERENCE, best_validation_baseline, portrait_systems
from portrait.evaluation.summary import KS, summarise_run
from portrait.evaluation.tuning import TuningResult
from portrait.experiments import Experiment
from portrait.item_space import CollabSettings
from portrait.ports import Encoder
from storage.datasets import Dataset


def cmd_evaluate(
    args: argparse.Namespace, encoder: Encoder | None = None, dataset: Dataset | None = None
) -> int:
    """Tune (or load) Portrait and the baselines on validation, run all on test, report."""
    if getattr(args, "served", None):
        return cmd_evaluate_served(args, encoder, dataset)
    t_all = time.perf_counter()
    out = Path(args.out or f"out/eval-{_dt.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    config = read_tuned_config(args.config) if args.config else None
    params, collab = portrait_params(config) if config else (None, _collab_from_args(args))
    prep = _prepare(args, encoder, dataset)
    timings = prep.timings
    val_phase = prep.phase("validation", collab)

    t0 = time.perf_counter()
    choice = tune_baselines(val_phase.split, val_phase.incidence, prep.item_ids)
    timings["baseline grid (validation)"] = time.perf_counter() - t0

    tuning: TuningResult | None = None
    tuning_seconds = 0.0
    if params is None:
        t0 = time.perf_counter()
        tuning = tune_with_progress(val_phase.split, val_phase.factory, args.trials, args.seed)
        tuning_seconds = time.perf_counter() - t0
        params = tuning.best
        validation_metrics = tuning.best_metrics
    else:
        validation_metrics = config.metadata.get("validation_metrics", {}) if config else {}

    test_phase = prep.phase("test", collab)
    if getattr(args, "ann", False):
        test_phase.factory.ann = AnnSettings(force=True)
        _log("ranking Portrait's systems through the approximate index (--ann)")
    t0 = time.perf_counter()
    systems = baseline_systems(choice, test_phase.incidence, prep.item_ids)
    timings["baselines fit (test)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    roster = portrait_systems(test_phase.factory, params, collab is not None, test_phase.split,
                              log=_log)
    timings["rankers training (test phase's training events)"] = time.perf_counter() - t0
    systems += roster.systems
    fine_tuned = []
    if args.fine_tune_encoder:
        t0 = time.perf_counter()
        fine_tuned = fine_tuned_systems(prep, test_phase, params, parse_seeds(
            args.fine_tune_encoder), args.cache_dir, log=_log)
        timings["fine-tuned encoders (train, encode, rankers)"] = time.perf_counter() - t0
        systems += [s for ft in fine_tuned for s in ft.systems]
    result = run_with_progress(test_phase.split, systems, prep.item_ids, "test replay")
    timings["test replay (all systems)"] = result.seconds
    t0 = time.perf_counter()
    summary = summarise_run(result, REFERENCE, args.resamples, args.seed,
                            pairs={k: v for ft in fine_tuned for k, v in ft.pairs.items()})
    timings["bootstrap"] = time.perf_counter() - t0
    if tuning is not None:
        timings["Portrait tuning (validation)"] = tuning_seconds
    timings["total"] = time.perf_counter() - t_all
    timings["total without Portrait tuning"] = timings["total"] - tuning_seconds

    doc: dict[str, Any] = {
        "version": 1,
        "created": _now(),
        "command": "portrait " + " ".join(args.argv),
        "dataset": prep.dataset_stats(),
        "split": {
            "kind": prep.split_kind,
            "validation": prep.splits["validation"].stats(),
            "test": prep.splits["test"].stats(),
        },
        "encoder": {
            **prep.encode_info,
            "text_events": {k: v for k, v in prep.text_info.items() if k != "texts_sha256"},
        },
        "collaborative": collab.to_dict() if collab else None,
        "bootstrap": {"resamples": args.resamples, "seed": args.seed},
        "portrait_config": {
            "source": str(args.config) if args.config
            else f"tuned on validation ({args.trials} trials)",
            "params": params.describe(),
            "validation_metrics": validation_metrics,
            "tuning": tuning.summary() if tuning else None,
            "trials": [dataclasses.asdict(t) for t in tuning.trials] if tuning else None,
        },
        "baselines": {"chosen": choice.to_dict(), "validation": choice.validation},
        "ranker": roster.to_dict(),
        # --ann: Portrait's systems ranked through these approximate indexes
        "approximate_index": test_phase.factory.ann_indexes(),
        "fine_tuned_encoders": [
            {"seed": ft.seed, "folder": str(ft.folder), "record": ft.record,
             "seconds": ft.seconds, "refused": ft.refused} for ft in fine_tuned],
        "test": summary,
        "timings": timings,
        "caveats": CAVEATS,
    }
    plots = [] if args.no_plots else write_plots(summary, out)
    doc["plots"] = plots
    write_json(out / "metrics.json", doc)
    if tuning is not None:
        tuned = tuned_config(
            params, dataset=prep.name, created=doc["created"], model_id=prep.provider.model_id,
            collab=collab, validation_metrics=validation_metrics,
            extra={"search": tuning.summary()},
        )
        write_json(out / "tuned-config.json", tuned.to_document())
    write_report(doc, out, plots)
    _print_summary(summary, timings, out)
    return 0


def cmd_tune(
    args: argparse.Namespace, encoder: Encoder | None = None, dataset: Dataset | None = None
) -> int:
    """Tune Portrait on the validation split and write the tuned-config file."""
    t_all = time.perf_counter()
    collab = _collab_from_args(args)
    prep = _prepare(args, encoder, dataset)
    val_phase = prep.phase("validation", collab)
    tuning = tune_with_progress(val_phase.split, val_phase.factory, args.trials, args.seed)
    choice = tune_baselines(val_phase.split, val_phase.incidence, prep.item_ids)
    best_name, best_candidate = best_validation_baseline(choice)
    config = tuned_config(
        tuning.best,
        dataset=prep.name,
        created=_now(),
        model_id=prep.provider.model_id,
        collab=collab,
        validation_metrics=tuning.best_metrics,
        extra={
            "split": prep.split_kind,
            "search": tuning.summary(),
            "validation_baselines": {
                "best": best_name,
                "params": choice.to_dict(),
                "metrics": choice.validation[best_candidate],
            },
            "command": "portrait " + " ".join(args.argv),
            "seconds": time.perf_counter() - t_all,
        },
    )
    out = Path(args.out or f"configs/tuned-{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, config.to_document(), final_newline=True)
    vm = tuning.best_metrics
    print(f"validation NDCG@10 {vm['NDCG@10']:.4f} HR@10 {vm['HR@10']:.4f} "
          f"(best baseline {best_name}: {choice.validation[best_candidate]['NDCG@10']:.4f}); "
          f"{len(tuning.trials)} trials in {time.perf_counter() - t_all:.0f}s -> {out}")
    return 0


def cmd_ab(
    args: argparse.Namespace, encoder: Encoder | None = None, dataset: Dataset | None = None
) -> int:
    """Replay the test split through two tuned-config files; paired and assigned differences."""
    params_a, collab_a = portrait_params(read_tuned_config(args.a))
    params_b, collab_b = portrait_params(read_tuned_config(args.b))
    prep = prepare(args.dataset, args.data_dir, split_kind=args.split, encoder=encoder,
                   cache_dir=args.cache_dir, dataset=dataset, **_from_settings(args))
    phase_a = prep.phase("test", collab_a)
    phase_b = prep.phase("test", collab_b)
    systems = [phase_a.factory.system("A", params_a), phase_b.factory.system("B", params_b)]
    result = run_with_progress(phase_a.split, systems, prep.item_ids, "A/B replay")
    ma, mb = result.systems["A"].metrics(KS), result.systems["B"].metrics(KS)
    comparisons = ab.compare(ma, mb, n_resamples=args.resamples, seed=args.seed)
    split = _weights(args.ab_split)
    experiment = Experiment.from_config({"name": args.experiment, "split": split})
    variants = list(split)
    users = [c.user_id for c in result.cases]
    assigned = ab.compare_assigned(users, ma, mb, experiment, variants[0], variants[-1],
                                   n_resamples=args.resamples, seed=args.seed)
    text = ab_markdown(str(args.a), str(args.b), prep.name, prep.split_kind, len(users),
                       comparisons, experiment.name, split, variants, assigned)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ab.md").write_text(text)
        write_json(out / "ab.json", {
            "a": str(args.a), "b": str(args.b), "dataset": prep.name, "split": prep.split_kind,
            "users": len(users), "paired": [c.to_dict() for c in comparisons],
            "assigned": assigned, "experiment": {"name": experiment.name, "split": split},
        })
    return 0


def _from_settings(args: argparse.Namespace) -> dict[str, Any]:
    """What :func:`prepare` takes from the ``PORTRAIT_*`` settings (read once by the CLI);
    ``--encoder FOLDER`` puts that version's checkpoint, verified against its record, in
    place of the base model."""
    settings = getattr(args, "settings", None)
    folder = getattr(args, "encoder", None)
    if settings is None and folder is None:
        return {}
    encoder = settings.encoder if settings is not None else EncoderSettings()
    if encoder.dtype == "float32":
        # The service's default; offline runs take bf16 where the CPU or GPU has it natively
        # (auto-cpu resolves to float32 elsewhere). Vectors keep the model id either way.
        encoder = encoder.model_copy(update={"dtype": "auto-cpu"})
    if folder is not None:
        try:
            record = read_record(folder)
            verify_checkpoint(folder, record)
        except CheckpointMismatch as exc:
            raise SystemExit(f"--encoder: {exc}") from None
        encoder = checkpoint_settings(Path(folder), record, encoder)
    out: dict[str, Any] = {"encoder_settings": encoder}
    if settings is not None:
        out["datasets_dir"] = settings.storage.datasets_dir
    return out


def _prepare(
    args: argparse.Namespace, encoder: Encoder | None, dataset: Dataset | None
) -> Prepared:
    """:func:`prepare` from the arguments, refusing a split without users to evaluate."""
    prep = prepare(args.dataset, args.data_dir, split_kind=args.split, encoder=encoder,
                   cache_dir=args.cache_dir, dataset=dataset, **_from_settings(args))
    for phase, split in prep.splits.items():
        if not split.cases:
            raise SystemExit(
                f"{prep.name}: no users to evaluate in the {phase} split ({prep.split_kind}); "
                "leave-last-out needs users with at least 3 distinct items"
            )
    return prep


def _collab_from_args(args: argparse.Namespace) -> CollabSettings | None:
    if args.collab_dim <= 0:
        return None
    return CollabSettings(
        dim=args.collab_dim, shift=args.collab_shift, min_count=args.collab_min_count
    )


def _weights(spec: str) -> dict[str, int]:
    """``"control=50,treatment=50"`` as ``{"control": 50, "treatment": 50}``."""
    split = {}
    for part in spec.split(","):
        name, _, weight = part.partition("=")
        split[name.strip()] = int(weight)
    return split


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def _print_summary(summary: Mapping[str, Any], timings: Mapping[str, float], out: Path) -> None:
    print(f"{'system':26s} {'HR@10':>8s} {'NDCG@10':>8s} {'MRR':>8s}")
    systems = summary["systems"]
    for name in sorted(systems, key=lambda n: -systems[n]["metrics"]["NDCG@10"]["mean"]):
        m = systems[name]["metrics"]
        print(f"{name:26s} {m['HR@10']['mean']:8.4f} {m['NDCG@10']['mean']:8.4f} "
              f"{m['MRR']['mean']:8.4f}")
    for key in ("goal_issue_baselines", "goal"):
        goal = summary.get(key)
        if goal:
            low, high = goal["relative_ci"]
            print(f"portrait vs {goal['best_baseline']}: NDCG@10 lift "
                  f"{goal['relative_lift'] * 100:+.1f}% "
                  f"(CI {low * 100:+.1f}%..{high * 100:+.1f}%), "
                  f"diff CI [{goal['diff_ci'][0]:.4f}, {goal['diff_ci'][1]:.4f}] -> "
                  f"{'MET' if goal['met'] else 'NOT MET'}")
    print(f"total {timings['total']:.1f}s (without Portrait tuning "
          f"{timings['total without Portrait tuning']:.1f}s); report: {out / 'report.md'}")


def cmd_evaluate_served(
    args: argparse.Namespace, encoder: Encoder | None = None, dataset: Dataset | None = None
) -> int:
    """``evaluate --served URL``: see :mod:`offline.served`.

    The offline reference takes the collaborative settings and the ranker settings the service
    derives from the same configuration and ``PORTRAIT_*`` settings: default collaborative
    settings where the config names none, and the ``PORTRAIT_RANKER_*`` settings (or their
    defaults) for the ranker: a service run with other ranker settings trains another ranker
    than the reference."""
    import asyncio

    import httpx

    from offline.served import evaluate_served, offline_reference, served_report
    from portrait.default_config import default_config
    from serve.settings.sections import RankerSection

    config = read_tuned_config(args.config) if args.config else default_config()
    params, collab = portrait_params(config)
    settings = getattr(args, "settings", None)
    ranker = (settings.ranker if settings is not None else RankerSection()).ranker_settings()
    prep = _prepare(args, encoder, dataset)

    async def serve_run() -> dict[str, Any]:
        headers = {"authorization": f"Bearer {args.token}"} if args.token else {}
        async with httpx.AsyncClient(base_url=args.served.rstrip("/"), timeout=600,
                                     headers=headers) as client:
            return await evaluate_served(prep, client, prefix=args.served_prefix)

    served = asyncio.run(serve_run())
    # As the service: collaborative vectors whenever the blend uses them (its defaults where
    # the config names none).
    offline = offline_reference(prep, params, (collab or CollabSettings())
                                if params.alpha > 0 else None, ranker)
    table = served_report(served, offline)
    print(f"{prep.name}, {prep.split_kind}, {served['cases']} test users, "
          f"{served['events']} events replayed over HTTP; item space "
          f"{served['item_space'].get('version', '-')}\n{table}")
    print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in served["seconds"].items()))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "served.md").write_text(table + "\n")
        write_json(out / "served.json", {"served": served, "offline": offline,
                                         "dataset": prep.name, "split": prep.split_kind,
                                         "command": "portrait " + " ".join(args.argv)})
    return 0
