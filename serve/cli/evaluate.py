"""``portrait evaluate | tune | ab``: offline evaluation of Portrait against baselines.

    portrait evaluate --dataset movielens --out out/eval-2026-11-28
    portrait evaluate --dataset amazon-magazine --config configs/tuned-movielens.json
    portrait tune --dataset movielens --out configs/tuned-movielens.json
    portrait ab --a configs/x.json --b configs/y.json --dataset movielens

``evaluate`` loads the data, encodes item texts with the real encoder (vLLM; vectors cached
under ``.portrait/cache/``), splits (leave-last-out by default), learns collaborative vectors
from each phase's training events, picks Portrait's configuration on the VALIDATION split
(``--config`` to use a tuned file instead) and the baselines' parameters on the same
validation split, then runs every system once on the TEST split, full-catalog ranking, and
writes ``report.md``, ``metrics.json`` and PNG plots into ``--out``.

``tune`` searches on validation only and writes the versioned config document the service
loads. ``ab`` replays the test split through two config files and reports paired differences.
The evaluation logic itself is the pure package :mod:`portrait.evaluation`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from portrait.catalog import ItemRecord, item_text
from portrait.evaluation import ab as ab_mod
from portrait.evaluation.baselines import no_decay
from portrait.evaluation.collaborative import CollabSettings, interactions, sppmi_embedding
from portrait.evaluation.metrics import (
    DEFAULT_RESAMPLES,
    bootstrap_ci,
    paired_bootstrap,
)
from portrait.evaluation.runner import RunResult, System, run
from portrait.evaluation.splits import Split, leave_last_out, temporal_split
from portrait.evaluation.tuning import (
    PortraitFactory,
    PortraitParams,
    TuningResult,
    baseline_systems,
    config_document,
    params_from_document,
    tune_baselines,
    tune_portrait,
)
from portrait.events import event_text
from portrait.keywords import TextFeatureBatch
from portrait.ports import TextFeatures

DATASETS = ("movielens", "amazon-magazine", "generic")
SPLITS = ("leave-last-out", "temporal")
KS = (5, 10, 20)
CURVE_KS = tuple(range(1, 51))
BASELINES = ("most-popular", "recent-popular", "item-knn", "item-knn-seq")
# the baselines the issue lists; item-knn-seq is an extra, sequence-aware one added here
ISSUE_BASELINES = ("most-popular", "recent-popular", "item-knn")
HISTORY_BUCKETS = (3, 10, 20, 50, 100, 200, 500)
ENCODE_BATCH = 512


# -- data -------------------------------------------------------------------------------------


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def load_dataset(name: str, data_dir: Path | None) -> Any:
    """A dataset by name: ``movielens`` (bundled copy by default), ``amazon-magazine``, ``generic``."""
    from storage.datasets import load_amazon, load_generic, load_movielens, shared_datasets_dir

    if name == "movielens":
        return load_movielens(data_dir)
    if name == "amazon-magazine":
        base = data_dir
        if base is None:
            shared = shared_datasets_dir()
            if shared is None:
                raise SystemExit("amazon-magazine: no --data-dir and no shared datasets folder")
            base = shared / "amazon-reviews-2018-small"
        return load_amazon(
            base / "Magazine_Subscriptions_5.json.gz",
            base / "meta_Magazine_Subscriptions.json.gz",
            name="amazon-magazine",
        )
    if name == "generic":
        if data_dir is None:
            raise SystemExit("--data-dir is required for the generic format")
        return load_generic(data_dir / "interactions.csv", data_dir / "items.csv")
    raise SystemExit(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)}")


def evaluation_items(dataset: Any) -> tuple[list[ItemRecord], int]:
    """The catalog for evaluation, and how many item descriptions were blanked.

    The Amazon loader describes items that lack metadata with their *review summaries*; an
    evaluation holding reviews out would see held-out text in the catalog, so those
    descriptions are dropped here (title ``"Item <asin>"`` only).
    """
    if not dataset.counters.get("items_from_reviews"):
        return list(dataset.items), 0
    out, blanked = [], 0
    for item in dataset.items:
        if item.title == f"Item {item.item_id}" and not item.tags and not item.attributes:
            out.append(dataclasses.replace(item, description=""))
            blanked += 1
        else:
            out.append(item)
    return out, blanked


# -- the encoder and its cache ---------------------------------------------------------------


class EncoderProvider:
    """The encoder, started only on a cache miss. ``encoder`` injects one (tests)."""

    def __init__(self, encoder: Any = None) -> None:
        self._encoder = encoder
        self._settings = None
        self.started_seconds: float | None = None
        if encoder is None:
            from serve.encoder_settings import EncoderSettings

            settings = EncoderSettings.from_env()
            if not os.environ.get("PORTRAIT_ENCODER_DTYPE"):
                # bf16 where the CPU/GPU supports it natively; vectors keep the model id
                settings = dataclasses.replace(settings, dtype="auto-cpu")
            self._settings = settings

    @property
    def model_id(self) -> str:
        return self._encoder.model_id if self._encoder is not None else self._settings.model_id

    def get(self) -> Any:
        if self._encoder is None:
            from serve.vllm_encoder import VllmEncoder

            t0 = time.perf_counter()
            self._encoder = VllmEncoder(self._settings).start()
            self.started_seconds = time.perf_counter() - t0
        return self._encoder

    def describe(self) -> dict[str, Any]:
        enc = self._encoder
        return {
            "model_id": self.model_id,
            "class": type(enc).__name__ if enc is not None else "VllmEncoder (not started)",
            "dtype": getattr(enc, "dtype", None)
            or (self._settings.dtype if self._settings else None),
            "device": getattr(enc, "device", None),
            "start_seconds": self.started_seconds,
        }


def _digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\x1e")
    return h.hexdigest()


def cached_encode(
    texts: Sequence[str],
    provider: EncoderProvider,
    cache_dir: Path | None,
    stem: str,
    progress: bool = True,
    label: str = "encode",
) -> tuple[np.ndarray, dict[str, Any]]:
    """Vectors of ``texts``, from ``<cache_dir>/<stem>-<sha256(model_id)[:12]>.npy`` when valid.

    A JSON sidecar records the digest of the texts; any change (new template, new items,
    another model) re-encodes and overwrites.
    """
    model_hash = hashlib.sha256(provider.model_id.encode()).hexdigest()[:12]
    digest = _digest(texts)
    path = sidecar = None
    if cache_dir is not None:
        path = cache_dir / f"{stem}-{model_hash}.npy"
        sidecar = path.with_suffix(".json")
        if path.exists() and sidecar.exists():
            meta = json.loads(sidecar.read_text())
            if meta.get("texts_sha256") == digest and meta.get("model_id") == provider.model_id:
                return np.load(path), {**meta, "cache": "hit", "path": str(path)}
    t0 = time.perf_counter()
    encoder = provider.get()
    chunks = []
    bar = _bar(len(texts), label, "text") if progress else None
    for start in range(0, len(texts), ENCODE_BATCH):
        batch = list(texts[start : start + ENCODE_BATCH])
        chunks.append(np.asarray(encoder.encode(batch), dtype=np.float32))
        if bar is not None:
            bar.update(len(batch))
    if bar is not None:
        bar.close()
    matrix = np.vstack(chunks) if chunks else np.zeros((0, 0), dtype=np.float32)
    meta = {
        "model_id": provider.model_id,
        "texts_sha256": digest,
        "n": len(texts),
        "dim": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
        "encoder": provider.describe(),
        "encode_seconds": time.perf_counter() - t0,
    }
    if path is not None and sidecar is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, matrix)
        sidecar.write_text(json.dumps(meta, indent=2))
    return matrix, {**meta, "cache": "miss", "path": str(path) if path else None}


def text_event_features(
    events: Sequence[Any], provider: EncoderProvider, cache_dir: Path | None, stem: str
) -> tuple[dict[str, TextFeatures], dict[str, Any]]:
    """Vectors and keywords of every review and search, keyed by event id (cached)."""
    text_events = [(e.event_id, event_text(e)) for e in events if event_text(e)]
    if not text_events:
        return {}, {"n": 0}
    batch = TextFeatureBatch([t for _, t in text_events])
    vectors, info = cached_encode(batch.inputs, provider, cache_dir, stem, label="text events")
    feats = batch.assemble(vectors)
    return {eid: f for (eid, _), f in zip(text_events, feats)}, info


# -- preparation -------------------------------------------------------------------------------


@dataclass
class Phase:
    split: Split
    incidence: np.ndarray
    collab: np.ndarray | None
    factory: PortraitFactory
    seconds: float


@dataclass
class Prepared:
    dataset: Any
    name: str
    items: list[ItemRecord]
    item_ids: list[str]
    text_matrix: np.ndarray
    texts: dict[str, TextFeatures]
    provider: EncoderProvider
    encode_info: dict[str, Any]
    text_info: dict[str, Any]
    split_kind: str
    splits: dict[str, Split]
    blanked_descriptions: int
    timings: dict[str, float]
    phases: dict[tuple[str, Any], Phase] = field(default_factory=dict)

    def phase(self, name: str, collab: CollabSettings | None) -> Phase:
        key = (name, collab)
        if key not in self.phases:
            t0 = time.perf_counter()
            split = self.splits[name]
            inc = interactions(split.train_events, self.item_ids).matrix
            emb = sppmi_embedding(inc, collab) if collab is not None else None
            factory = PortraitFactory(
                self.item_ids,
                self.text_matrix,
                emb,
                [i.tags for i in self.items],
                self.texts,
                self.provider.model_id,
            )
            seconds = time.perf_counter() - t0
            self.timings[f"collaborative vectors ({name})"] = (
                self.timings.get(f"collaborative vectors ({name})", 0.0) + seconds
            )
            self.phases[key] = Phase(split, inc, emb, factory, seconds)
        return self.phases[key]


def prepare(
    dataset_name: str,
    data_dir: Path | None,
    *,
    split_kind: str = "leave-last-out",
    encoder: Any = None,
    cache_dir: Path | None = None,
    dataset: Any = None,
) -> Prepared:
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(dataset_name, data_dir)
    timings["load dataset"] = time.perf_counter() - t0
    items, blanked = evaluation_items(ds)
    provider = EncoderProvider(encoder)
    t0 = time.perf_counter()
    text_matrix, encode_info = cached_encode(
        [item_text(i) for i in items], provider, cache_dir, ds.name, label="item texts"
    )
    timings["item text vectors"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts, text_info = text_event_features(ds.events, provider, cache_dir, f"{ds.name}-text-events")
    timings["text event features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if split_kind == "leave-last-out":
        val, test = leave_last_out(ds.events)
    elif split_kind == "temporal":
        val, test = temporal_split(ds.events)
    else:
        raise SystemExit(f"unknown split {split_kind!r}; use one of {', '.join(SPLITS)}")
    timings["split"] = time.perf_counter() - t0
    return Prepared(
        dataset=ds,
        name=ds.name,
        items=items,
        item_ids=[i.item_id for i in items],
        text_matrix=text_matrix,
        texts=texts,
        provider=provider,
        encode_info=encode_info,
        text_info=text_info,
        split_kind=split_kind,
        splits={"validation": val, "test": test},
        blanked_descriptions=blanked,
        timings=timings,
    )


# -- progress ---------------------------------------------------------------------------------


def _bar(total: int, desc: str, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def _run_with_bar(split: Split, systems: Sequence[System], item_ids: Sequence[str], desc: str) -> RunResult:
    bar = _bar(len(split.cases), desc, "user")
    last = [0]

    def progress(done: int, total: int) -> None:
        bar.update(done - last[0])
        last[0] = done

    try:
        return run(split, systems, item_ids, progress=progress)
    finally:
        bar.close()


def _tune_with_bar(prep: Prepared, collab: CollabSettings | None, budget: int, seed: int) -> TuningResult:
    phase = prep.phase("validation", collab)
    bar = _bar(budget, "tune Portrait (validation)", "trial")

    def progress(i: int, total: int, value: float, best: float) -> None:
        bar.update(1)
        bar.set_postfix(best=f"{best:.4f}", last=f"{value:.4f}")

    try:
        return tune_portrait(phase.split, phase.factory, budget=budget, seed=seed, progress=progress)
    finally:
        bar.close()


# -- systems ----------------------------------------------------------------------------------


def portrait_systems(factory: PortraitFactory, params: PortraitParams, has_collab: bool) -> list[System]:
    """Tuned Portrait and its ablations (one component removed each; nothing re-tuned)."""
    r = params.ranking
    systems: list[System] = [
        factory.system("portrait", params),
        factory.system("portrait-defaults", PortraitParams(alpha=0.0)),
        factory.system(
            "portrait-no-decay", dataclasses.replace(params, profile=no_decay(params.profile))
        ),
        factory.system(
            "portrait-no-short-term",
            dataclasses.replace(params, ranking=dataclasses.replace(r, short_mix=0.0)),
        ),
        factory.system(
            "portrait-no-tags",
            dataclasses.replace(params, ranking=dataclasses.replace(r, tag_weight=0.0)),
        ),
        factory.system(
            "portrait-no-popularity",
            dataclasses.replace(params, ranking=dataclasses.replace(r, popularity_weight=0.0)),
        ),
    ]
    if has_collab:
        systems.append(factory.system("portrait-text-only", dataclasses.replace(params, alpha=0.0)))
        systems.append(factory.system("portrait-collab-only", dataclasses.replace(params, alpha=1.0)))
    return systems


# -- summaries --------------------------------------------------------------------------------


def _curves(ranks: Sequence[Sequence[float]], ks: Sequence[int]) -> dict[str, list[float]]:
    from portrait.evaluation.metrics import per_user_metrics

    m = per_user_metrics(ranks, ks)
    return {
        "HR": [float(m[f"HR@{k}"].mean()) for k in ks],
        "NDCG": [float(m[f"NDCG@{k}"].mean()) for k in ks],
    }


def _bucket_label(lo: int, hi: int | None) -> str:
    return f"{lo}-{hi - 1}" if hi is not None else f"{lo}+"


def history_buckets(result: RunResult, metric: str = "NDCG@10") -> dict[str, Any]:
    edges = list(HISTORY_BUCKETS)
    bounds = list(zip(edges, edges[1:] + [None]))
    h = result.history_lengths
    if h.size and h.min() < edges[0]:
        bounds.insert(0, (0, edges[0]))
    out: dict[str, Any] = {"metric": metric, "buckets": []}
    metrics = result.metrics(KS)
    for lo, hi in bounds:
        mask = (h >= lo) & ((h < hi) if hi is not None else True)
        n = int(mask.sum())
        if n == 0:
            continue
        out["buckets"].append(
            {
                "label": _bucket_label(lo, hi),
                "users": n,
                "values": {s: float(m[metric][mask].mean()) for s, m in metrics.items()},
            }
        )
    return out


def summarise(
    result: RunResult, reference: str, resamples: int, seed: int
) -> dict[str, Any]:
    metrics = result.metrics(KS)
    lists = result.list_metrics(KS)
    systems: dict[str, Any] = {}
    for name, cols in metrics.items():
        systems[name] = {
            "metrics": {m: bootstrap_ci(v, resamples, seed=seed).to_dict() for m, v in cols.items()},
            "list": lists[name],
            "seconds": result.systems[name].seconds,
            "curves": _curves(result.systems[name].ranks, CURVE_KS),
        }
    baselines = [b for b in BASELINES if b in metrics]
    best = max(baselines, key=lambda b: metrics[b]["NDCG@10"].mean()) if baselines else None
    comparisons: dict[str, Any] = {}
    if reference in metrics:
        for other in metrics:
            if other == reference:
                continue
            comparisons[other] = {
                m: paired_bootstrap(metrics[reference][m], metrics[other][m], resamples, seed=seed).to_dict()
                for m in ("HR@10", "NDCG@10", "MRR", "NDCG@20")
                if m in metrics[other]
            }
    def goal_for(names: Sequence[str]) -> dict[str, Any] | None:
        present = [b for b in names if b in comparisons]
        if not present:
            return None
        top = max(present, key=lambda b: metrics[b]["NDCG@10"].mean())
        c = comparisons[top]["NDCG@10"]
        return {
            "baselines_considered": list(present),
            "best_baseline": top,
            "relative_lift": c["relative"]["mean"],
            "relative_ci": [c["relative"]["low"], c["relative"]["high"]],
            "diff": c["diff"]["mean"],
            "diff_ci": [c["diff"]["low"], c["diff"]["high"]],
            "lift_at_least_10pct": c["relative"]["mean"] >= 0.10,
            "diff_ci_above_zero": c["diff"]["low"] > 0,
            "met": c["relative"]["mean"] >= 0.10 and c["diff"]["low"] > 0,
        }

    goal = goal_for(BASELINES)
    goal_issue = goal_for(ISSUE_BASELINES)
    return {
        "cases": len(result.cases),
        "n_items": result.n_items,
        "targets": int(sum(len(c.targets) for c in result.cases)),
        "targets_outside_catalog": result.targets_outside_catalog,
        "systems": systems,
        "best_baseline": best,
        "comparisons_vs": reference,
        "comparisons": comparisons,
        "goal": goal,
        "goal_issue_baselines": goal_issue,
        "history_buckets": history_buckets(result),
        "run_seconds": result.seconds,
    }


# -- plots ------------------------------------------------------------------------------------


def write_plots(summary: Mapping[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    systems = summary["systems"]
    main = [s for s in systems if s in BASELINES or s == "portrait"]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in main:
        for ax, key in zip(axes, ("HR", "NDCG")):
            ax.plot(CURVE_KS, systems[name]["curves"][key], label=name,
                    linewidth=2.4 if name == "portrait" else 1.4)
    for ax, key in zip(axes, ("HR@K", "NDCG@K")):
        ax.set_xlabel("K")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        for k in KS:
            ax.axvline(k, color="grey", alpha=0.2, linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Full-catalog ranking metrics by cut-off K (test split)")
    fig.tight_layout()
    fig.savefig(out / "metrics_by_k.png", dpi=120)
    plt.close(fig)
    files.append("metrics_by_k.png")

    buckets = summary["history_buckets"]["buckets"]
    if buckets:
        fig, ax = plt.subplots(figsize=(11, 4.2))
        width = 0.8 / max(len(main), 1)
        x = np.arange(len(buckets))
        for j, name in enumerate(main):
            ax.bar(x + j * width, [b["values"][name] for b in buckets], width, label=name)
        ax.set_xticks(x + width * (len(main) - 1) / 2)
        ax.set_xticklabels([f"{b['label']}\n(n={b['users']})" for b in buckets])
        ax.set_xlabel("items in the user's visible history")
        ax.set_ylabel("NDCG@10")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        ax.set_title("NDCG@10 by history length (test split)")
        fig.tight_layout()
        fig.savefig(out / "ndcg_by_history.png", dpi=120)
        plt.close(fig)
        files.append("ndcg_by_history.png")

    names = sorted(systems, key=lambda s: systems[s]["metrics"]["NDCG@10"]["mean"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    means = [systems[s]["metrics"]["NDCG@10"]["mean"] for s in names]
    lows = [m - systems[s]["metrics"]["NDCG@10"]["low"] for s, m in zip(names, means)]
    highs = [systems[s]["metrics"]["NDCG@10"]["high"] - m for s, m in zip(names, means)]
    colors = ["tab:red" if s == "portrait" else "tab:blue" if s.startswith("portrait") else "tab:grey"
              for s in names]
    ax.barh(names, means, xerr=[lows, highs], color=colors, capsize=3)
    ax.set_xlabel("NDCG@10 (95% bootstrap CI)")
    ax.set_title("Portrait ablations and baselines (test split)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ablations.png", dpi=120)
    plt.close(fig)
    files.append("ablations.png")
    return files


# -- report -----------------------------------------------------------------------------------


def _f(x: float, digits: int = 4) -> str:
    return "nan" if x is None or x != x else f"{x:.{digits}f}"


def _ci(d: Mapping[str, float], digits: int = 4) -> str:
    return f"{_f(d['mean'], digits)} [{_f(d['low'], digits)}, {_f(d['high'], digits)}]"


def _pct(d: Mapping[str, float]) -> str:
    return f"{d['mean'] * 100:+.1f}% [{d['low'] * 100:+.1f}%, {d['high'] * 100:+.1f}%]"


def write_report(doc: Mapping[str, Any], out: Path, plots: Sequence[str]) -> None:
    s = doc["test"]
    lines: list[str] = []
    add = lines.append
    add(f"# Portrait offline evaluation: {doc['dataset']['name']}")
    add("")
    add(f"Generated {doc['created']} by `{doc['command']}`.")
    add("")
    goals = [(g, label) for g, label in (
        (s.get("goal_issue_baselines"), "the issue's baselines (most-popular, recent-popular, item-knn)"),
        (s.get("goal"), "all baselines, including the sequence-aware item-knn-seq"),
    ) if g]
    if goals:
        add("## Headline")
        add("")
        for goal, label in goals:
            verdict = "MET" if goal["met"] else "NOT MET"
            add(
                f"* Against {label}: best is `{goal['best_baseline']}`. Portrait (tuned) NDCG@10 "
                f"relative lift **{goal['relative_lift'] * 100:+.1f}%** "
                f"(95% paired bootstrap CI {goal['relative_ci'][0] * 100:+.1f}% to "
                f"{goal['relative_ci'][1] * 100:+.1f}%), absolute difference {_f(goal['diff'])} "
                f"(CI {_f(goal['diff_ci'][0])} to {_f(goal['diff_ci'][1])}). "
                f"Goal (lift >= 10% and difference CI above zero): **{verdict}**."
            )
        add("")
    add("## Setup")
    add("")
    ds = doc["dataset"]
    add(f"* Dataset: `{ds['name']}`: {ds['users']} users, {ds['items']} items, {ds['events']} events"
        + (f"; {ds['blanked_descriptions']} review-derived item descriptions blanked" if ds.get("blanked_descriptions") else "")
        + ".")
    sp = doc["split"]
    add(f"* Split: **{sp['kind']}**; validation {sp['validation']['cases']} users, test "
        f"{sp['test']['cases']} users ({s['targets']} targets, {s['targets_outside_catalog']} outside the catalog). "
        + ("Users with fewer than 3 distinct items are not evaluated (their events still train the global models)."
           if sp["kind"] == "leave-last-out" else
           "Evaluated: users with at least one interaction up to the cut time T and at least one new item after it; "
           "targets are all those new items (multi-item metrics)."))
    add("* Protocol: full-catalog ranking (no sampled negatives) of all "
        f"{s['n_items']} items; items in the user's visible history are excluded for every system; "
        "every interaction is a target whatever its rating; stream order is (occurred_at, event_id), "
        "so tied timestamps are ordered by event id; each profile is folded with the real "
        "`portrait.profile.fold` from the user's events strictly before the test point and scored with "
        "the real `portrait.ranking.score_items`.")
    add("* Global models (collaborative vectors, item-kNN) learn from the split's training events only; "
        "popularity (prior and baselines) counts only training events before each user's test time.")
    enc = doc["encoder"]
    add(f"* Item text vectors: `{enc['model_id']}` ({enc.get('encoder', {}).get('dtype') or enc.get('dtype')}), "
        f"cache {enc.get('cache')}; collaborative vectors: {doc['collaborative']}.")
    add(f"* Confidence intervals: percentile bootstrap over users, {doc['bootstrap']['resamples']} resamples, "
        f"seed {doc['bootstrap']['seed']}; differences use the paired bootstrap (same users resampled).")
    add("")
    add("## Test metrics (95% bootstrap CI)")
    add("")
    order = sorted(s["systems"], key=lambda n: -s["systems"][n]["metrics"]["NDCG@10"]["mean"])
    cols = [f"{m}@{k}" for k in KS for m in ("HR", "NDCG")] + ["Recall@10", "MRR"]
    add("| system | " + " | ".join(cols) + " |")
    add("|---|" + "---|" * len(cols))
    for name in order:
        m = s["systems"][name]["metrics"]
        add(f"| {name} | " + " | ".join(_ci(m[c]) for c in cols) + " |")
    add("")
    add("## Coverage and popularity of the recommendations")
    add("")
    add("Coverage@K: share of the catalog in at least one user's top K. PopPct@K: mean popularity "
        "percentile (by training interactions) of the recommended items; 100 = most popular.")
    add("")
    add("| system | Coverage@10 | Coverage@20 | PopPct@10 | PopPct@20 | seconds |")
    add("|---|---|---|---|---|---|")
    for name in order:
        li = s["systems"][name]["list"]
        add(f"| {name} | {_f(li['Coverage@10'])} | {_f(li['Coverage@20'])} | {_f(li['PopPct@10'], 1)} | "
            f"{_f(li['PopPct@20'], 1)} | {_f(s['systems'][name]['seconds'], 1)} |")
    add("")
    add(f"## Paired comparisons: `{s['comparisons_vs']}` minus each system")
    add("")
    add("| other system | NDCG@10 diff | NDCG@10 lift | HR@10 diff | MRR diff |")
    add("|---|---|---|---|---|")
    for name in order:
        c = s["comparisons"].get(name)
        if not c:
            continue
        add(f"| {name} | {_ci(c['NDCG@10']['diff'])} | {_pct(c['NDCG@10']['relative'])} | "
            f"{_ci(c['HR@10']['diff'])} | {_ci(c['MRR']['diff'])} |")
    add("")
    add("## NDCG@10 by history length (test split)")
    add("")
    hb = s["history_buckets"]["buckets"]
    main = [n for n in order if n in BASELINES or n == "portrait"]
    add("| history items | users | " + " | ".join(main) + " |")
    add("|---|---|" + "---|" * len(main))
    for b in hb:
        add(f"| {b['label']} | {b['users']} | " + " | ".join(_f(b["values"][n]) for n in main) + " |")
    add("")
    add("## Chosen configurations (validation split only)")
    add("")
    tuned = doc["portrait_config"]
    add(f"Portrait, source: {tuned['source']}.")
    add("")
    add("```json")
    add(json.dumps(tuned["params"], indent=2))
    add("```")
    if tuned.get("validation_metrics"):
        vm = tuned["validation_metrics"]
        add("")
        add(f"Validation: NDCG@10 {_f(vm.get('NDCG@10'))}, HR@10 {_f(vm.get('HR@10'))}"
            + (f" after {tuned['tuning']['trials']} trials (seed {tuned['tuning']['seed']})." if tuned.get("tuning") else "."))
    add("")
    add(f"Baselines (grid on validation): `{json.dumps(doc['baselines']['chosen'])}`.")
    add("")
    add("## Timing")
    add("")
    add("| step | seconds |")
    add("|---|---|")
    for step, sec in doc["timings"].items():
        add(f"| {step} | {sec:.1f} |")
    add("")
    if plots:
        add("## Figures")
        add("")
        for p in plots:
            add(f"![{p}]({p})")
            add("")
    add("## Caveats")
    add("")
    for c in doc.get("caveats", []):
        add(f"* {c}")
    add("")
    (out / "report.md").write_text("\n".join(lines))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(type(o).__name__)


CAVEATS = [
    "Leave-last-out holds out each user's last item, but other users' later events still train "
    "the co-occurrence models (collaborative vectors, item-kNN), as in most published "
    "leave-last-out results; the temporal split (`--split temporal`) is the strictly "
    "time-respecting check. Popularity is time-respecting in both.",
    "Ablations remove one component from the tuned configuration without re-tuning the others.",
    "MovieLens timestamps often tie (users rate in bursts); tied events are ordered by event id, "
    "which is not their true order.",
]


# -- commands ---------------------------------------------------------------------------------


def _collab_from_args(args: argparse.Namespace) -> CollabSettings | None:
    if args.collab_dim <= 0:
        return None
    return CollabSettings(dim=args.collab_dim, shift=args.collab_shift, min_count=args.collab_min_count)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _load_config(path: Path) -> tuple[PortraitParams, CollabSettings | None, dict[str, Any]]:
    doc = json.loads(Path(path).read_text())
    params, collab = params_from_document(doc)
    return params, collab, doc


def _dataset_stats(prep: Prepared) -> dict[str, Any]:
    stats = prep.dataset.stats()
    return {
        "name": prep.name,
        "users": stats["users"],
        "items": len(prep.items),
        "events": stats["events"],
        "blanked_descriptions": prep.blanked_descriptions,
        "stats": stats,
    }


def _require_cases(prep: Prepared) -> None:
    for phase, split in prep.splits.items():
        if not split.cases:
            raise SystemExit(
                f"{prep.name}: no users to evaluate in the {phase} split ({prep.split_kind}); "
                "leave-last-out needs users with at least 3 distinct items"
            )


def cmd_evaluate(args: argparse.Namespace, encoder: Any = None, dataset: Any = None) -> int:
    t_all = time.perf_counter()
    out = Path(args.out or f"out/eval-{_dt.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    config_doc = None
    if args.config:
        params, collab, config_doc = _load_config(args.config)
    else:
        params, collab = None, _collab_from_args(args)
    prep = prepare(args.dataset, args.data_dir, split_kind=args.split, encoder=encoder,
                   cache_dir=args.cache_dir, dataset=dataset)
    timings = prep.timings
    _require_cases(prep)
    val_phase = prep.phase("validation", collab)

    t0 = time.perf_counter()
    choice = tune_baselines(val_phase.split, val_phase.incidence, prep.item_ids)
    timings["baseline grid (validation)"] = time.perf_counter() - t0

    tuning: TuningResult | None = None
    tuning_seconds = 0.0
    if params is None:
        t0 = time.perf_counter()
        tuning = _tune_with_bar(prep, collab, args.trials, args.seed)
        tuning_seconds = time.perf_counter() - t0
        params = tuning.best
        validation_metrics = tuning.best_metrics
    else:
        validation_metrics = (config_doc or {}).get("validation_metrics", {})

    test_phase = prep.phase("test", collab)
    t0 = time.perf_counter()
    systems = baseline_systems(choice, test_phase.incidence, prep.item_ids)
    timings["baselines fit (test)"] = time.perf_counter() - t0
    systems += portrait_systems(test_phase.factory, params, collab is not None)
    result = _run_with_bar(test_phase.split, systems, prep.item_ids, "test replay")
    timings["test replay (all systems)"] = result.seconds
    t0 = time.perf_counter()
    summary = summarise(result, "portrait", args.resamples, args.seed)
    timings["bootstrap"] = time.perf_counter() - t0
    if tuning is not None:
        timings["Portrait tuning (validation)"] = tuning_seconds
    timings["total"] = time.perf_counter() - t_all
    timings["total without Portrait tuning"] = timings["total"] - tuning_seconds

    doc: dict[str, Any] = {
        "version": 1,
        "created": _now(),
        "command": "portrait " + " ".join(args.argv),
        "dataset": _dataset_stats(prep),
        "split": {
            "kind": prep.split_kind,
            "validation": prep.splits["validation"].stats(),
            "test": prep.splits["test"].stats(),
        },
        "encoder": {**prep.encode_info, "text_events": {k: v for k, v in prep.text_info.items() if k != "texts_sha256"}},
        "collaborative": collab.to_dict() if collab else None,
        "bootstrap": {"resamples": args.resamples, "seed": args.seed},
        "portrait_config": {
            "source": str(args.config) if args.config else f"tuned on validation ({args.trials} trials)",
            "params": params.describe(),
            "validation_metrics": validation_metrics,
            "tuning": tuning.summary() if tuning else None,
            "trials": [dataclasses.asdict(t) for t in tuning.trials] if tuning else None,
        },
        "baselines": {"chosen": choice.to_dict(), "validation": choice.validation},
        "test": summary,
        "timings": timings,
        "caveats": CAVEATS,
    }
    plots: list[str] = []
    if not args.no_plots:
        plots = write_plots(summary, out)
    doc["plots"] = plots
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=_json_default))
    if tuning is not None:
        tuned_doc = config_document(
            params, dataset=prep.name, created=doc["created"], model_id=prep.provider.model_id,
            collab=collab, validation_metrics=validation_metrics,
            extra={"search": tuning.summary()},
        )
        (out / "tuned-config.json").write_text(json.dumps(tuned_doc, indent=2, default=_json_default))
    write_report(doc, out, plots)
    _print_summary(summary, timings, out)
    return 0


def _print_summary(summary: Mapping[str, Any], timings: Mapping[str, float], out: Path) -> None:
    print(f"{'system':26s} {'HR@10':>8s} {'NDCG@10':>8s} {'MRR':>8s}")
    for name, s in sorted(summary["systems"].items(), key=lambda kv: -kv[1]["metrics"]["NDCG@10"]["mean"]):
        m = s["metrics"]
        print(f"{name:26s} {m['HR@10']['mean']:8.4f} {m['NDCG@10']['mean']:8.4f} {m['MRR']['mean']:8.4f}")
    for key in ("goal_issue_baselines", "goal"):
        goal = summary.get(key)
        if goal:
            print(f"portrait vs {goal['best_baseline']}: NDCG@10 lift {goal['relative_lift'] * 100:+.1f}% "
                  f"(CI {goal['relative_ci'][0] * 100:+.1f}%..{goal['relative_ci'][1] * 100:+.1f}%), "
                  f"diff CI [{goal['diff_ci'][0]:.4f}, {goal['diff_ci'][1]:.4f}] -> "
                  f"{'MET' if goal['met'] else 'NOT MET'}")
    print(f"total {timings['total']:.1f}s (without Portrait tuning "
          f"{timings['total without Portrait tuning']:.1f}s); report: {out / 'report.md'}")


def cmd_tune(args: argparse.Namespace, encoder: Any = None, dataset: Any = None) -> int:
    t_all = time.perf_counter()
    collab = _collab_from_args(args)
    prep = prepare(args.dataset, args.data_dir, split_kind=args.split, encoder=encoder,
                   cache_dir=args.cache_dir, dataset=dataset)
    _require_cases(prep)
    tuning = _tune_with_bar(prep, collab, args.trials, args.seed)
    val_phase = prep.phase("validation", collab)
    choice = tune_baselines(val_phase.split, val_phase.incidence, prep.item_ids)
    best_baseline = max(
        ("item-knn", f"knn:{choice.knn_neighbors}"),
        ("item-knn-seq", f"knnseq:{choice.knn_seq_neighbors}:{choice.knn_seq_half_life:g}"),
        ("recent-popular", f"recent:{choice.recent_window_days:g}"),
        key=lambda kv: choice.validation[kv[1]]["NDCG@10"],
    )
    doc = config_document(
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
                "best": best_baseline[0],
                "params": choice.to_dict(),
                "metrics": choice.validation[best_baseline[1]],
            },
            "command": "portrait " + " ".join(args.argv),
            "seconds": time.perf_counter() - t_all,
        },
    )
    out = Path(args.out or f"configs/tuned-{args.dataset}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    vm = tuning.best_metrics
    print(f"validation NDCG@10 {vm['NDCG@10']:.4f} HR@10 {vm['HR@10']:.4f} "
          f"(best baseline {best_baseline[0]}: {choice.validation[best_baseline[1]]['NDCG@10']:.4f}); "
          f"{len(tuning.trials)} trials in {time.perf_counter() - t_all:.0f}s -> {out}")
    return 0


def cmd_ab(args: argparse.Namespace, encoder: Any = None, dataset: Any = None) -> int:
    params_a, collab_a, doc_a = _load_config(args.a)
    params_b, collab_b, doc_b = _load_config(args.b)
    prep = prepare(args.dataset, args.data_dir, split_kind=args.split, encoder=encoder,
                   cache_dir=args.cache_dir, dataset=dataset)
    phase_a = prep.phase("test", collab_a)
    phase_b = prep.phase("test", collab_b)
    systems = [phase_a.factory.system("A", params_a), phase_b.factory.system("B", params_b)]
    result = _run_with_bar(phase_a.split, systems, prep.item_ids, "A/B replay")
    ma, mb = result.systems["A"].metrics(KS), result.systems["B"].metrics(KS)
    comparisons = ab_mod.compare(ma, mb, n_resamples=args.resamples, seed=args.seed)
    split = {}
    for part in args.ab_split.split(","):
        name, _, weight = part.partition("=")
        split[name.strip()] = int(weight)
    experiment = ab_mod.Experiment.from_config({"name": args.experiment, "split": split})
    variants = list(split)
    users = [c.user_id for c in result.cases]
    assigned = ab_mod.compare_assigned(users, ma, mb, experiment, variants[0], variants[-1],
                                       n_resamples=args.resamples, seed=args.seed)
    lines = [f"# Offline A/B: A = {args.a}, B = {args.b}", "",
             f"{len(users)} users of `{prep.name}` ({prep.split_kind}, test split) replayed through both "
             "configurations; differences are A - B with paired bootstrap 95% intervals.", "",
             "| metric | A | B | A - B | relative |", "|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.metric} | {_ci(c.a.to_dict())} | {_ci(c.b.to_dict())} | "
                     f"{_ci(c.paired.diff.to_dict())} | {_pct(c.paired.relative.to_dict())} |")
    lines += ["", f"Online view (experiment `{experiment.name}`, split {split}): "
              f"{assigned['users_a']} users in `{variants[0]}` (A), {assigned['users_b']} in "
              f"`{variants[-1]}` (B)."]
    if "NDCG@10" in assigned["metrics"]:
        d = assigned["metrics"]["NDCG@10"]["diff"]
        lines.append(f"Unpaired NDCG@10 difference as assigned: {_ci(d)}.")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "ab.md").write_text(text)
        (out / "ab.json").write_text(json.dumps({
            "a": str(args.a), "b": str(args.b), "dataset": prep.name, "split": prep.split_kind,
            "users": len(users), "paired": [c.to_dict() for c in comparisons],
            "assigned": assigned, "experiment": {"name": experiment.name, "split": split},
        }, indent=2, default=_json_default))
    return 0


# -- argument parsing -------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, default="movielens")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="dataset folder (default: bundled MovieLens / shared Amazon folder)")
    p.add_argument("--split", choices=SPLITS, default="leave-last-out")
    p.add_argument("--cache-dir", type=Path, default=repo_root() / ".portrait" / "cache",
                   help="encoder output cache (default: .portrait/cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")


def _collab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collab-dim", type=int, default=CollabSettings().dim,
                   help="collaborative vector size (0: text vectors only)")
    p.add_argument("--collab-shift", type=float, default=1.0, help="SPPMI shift k")
    p.add_argument("--collab-min-count", type=int, default=2,
                   help="training users an item needs to get a collaborative vector")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate Portrait and baselines, write a report")
    _common(ev)
    _collab_args(ev)
    ev.add_argument("--out", type=Path, default=None, help="output folder (default out/eval-<date>)")
    ev.add_argument("--config", type=Path, default=None,
                    help="tuned config document; default: tune on validation first")
    ev.add_argument("--trials", type=int, default=40, help="tuning budget when no --config")
    ev.add_argument("--no-plots", action="store_true")
    tu = sub.add_parser("tune", help="tune Portrait on the validation split, write a config file")
    _common(tu)
    _collab_args(tu)
    tu.add_argument("--out", type=Path, default=None, help="config file (default configs/tuned-<dataset>.json)")
    tu.add_argument("--trials", type=int, default=60)
    abp = sub.add_parser("ab", help="offline A/B of two config files on the test split")
    _common(abp)
    abp.add_argument("--a", type=Path, required=True)
    abp.add_argument("--b", type=Path, required=True)
    abp.add_argument("--experiment", default="offline-ab")
    abp.add_argument("--ab-split", default="control=50,treatment=50",
                     help="variant weights; the first variant stands for A, the last for B")
    abp.add_argument("--out", type=Path, default=None)
    return parser


COMMANDS: dict[str, Callable[..., int]] = {"evaluate": cmd_evaluate, "tune": cmd_tune, "ab": cmd_ab}


def main(argv: Sequence[str] | None = None, *, encoder: Any = None, dataset: Any = None) -> int:
    """Entry point: ``main(["evaluate", "--dataset", "movielens", ...])``.

    ``encoder`` replaces the vLLM encoder (tests pass a deterministic one); ``dataset`` a
    loaded :class:`~storage.datasets.Dataset` instead of ``--dataset``/``--data-dir``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return COMMANDS[args.command](args, encoder=encoder, dataset=dataset)


if __name__ == "__main__":
    sys.exit(main())
