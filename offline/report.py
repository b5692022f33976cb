"""The Markdown documents offline writes: the evaluation report and the offline A/B summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from portrait.evaluation.roster import BLEND, REFERENCE, headline_systems
from portrait.evaluation.summary import KS

CAVEATS = [
    "Leave-last-out holds out each user's last item, but other users' later events still train "
    "the co-occurrence models (collaborative vectors, item-kNN), as in most published "
    "leave-last-out results; the temporal split (`--split temporal`) is the strictly "
    "time-respecting check. Popularity is time-respecting in both.",
    "Ablations remove one component from the tuned configuration without re-tuning the others "
    "(each two-stage ablation trains its own ranker with one retriever or the text features "
    "left out).",
    "Tuned on validation only: the blend's parameters (also the two-stage system's profile and "
    "ranking configuration) come from the validation split; the learned ranker has fixed "
    "settings and stops early on held-out users of the test phase's training events. Nothing "
    "sees the test points.",
    "MovieLens timestamps often tie (users rate in bursts); tied events are ordered by event id, "
    "which is not their true order.",
]
ISSUE_GOAL_LABEL = "the issue's baselines (most-popular, recent-popular, item-knn)"
ALL_GOAL_LABEL = "all baselines, including the sequence-aware item-knn-seq and EASE"


def number(x: float | None, digits: int = 4) -> str:
    """``x`` with ``digits`` decimals; ``"nan"`` for a missing or NaN value."""
    return "nan" if x is None or x != x else f"{x:.{digits}f}"


def interval(d: Mapping[str, float], digits: int = 4) -> str:
    """``"mean [low, high]"`` of an interval's dictionary."""
    return f"{number(d['mean'], digits)} [{number(d['low'], digits)}, {number(d['high'], digits)}]"


def relative_interval(d: Mapping[str, float]) -> str:
    """A relative interval in signed percent: ``"+5.1% [-2.0%, +12.3%]"``."""
    return f"{d['mean'] * 100:+.1f}% [{d['low'] * 100:+.1f}%, {d['high'] * 100:+.1f}%]"


def write_report(doc: Mapping[str, Any], out: Path, plots: Sequence[str]) -> None:
    """Write ``out/report.md`` from the evaluation document (``metrics.json``'s content).

    Args:
        doc: the evaluation document.
        out: the output folder.
        plots: the figure files to embed, relative to ``out``.
    """
    s = doc["test"]
    order = sorted(s["systems"], key=lambda n: -s["systems"][n]["metrics"]["NDCG@10"]["mean"])
    lines = [f"# Portrait offline evaluation: {doc['dataset']['name']}", "",
             f"Generated {doc['created']} by `{doc['command']}`.", ""]
    lines += _headline(s, doc.get("ranker"))
    lines += _setup(doc)
    lines += _metric_tables(s, order)
    lines += _configurations(doc)
    lines += _ranker(doc.get("ranker"))
    lines += _fine_tuned(doc.get("fine_tuned_encoders") or [], s.get("pairs") or {})
    lines += ["## Timing", "", "| step | seconds |", "|---|---|"]
    lines += [f"| {step} | {sec:.1f} |" for step, sec in doc["timings"].items()]
    lines.append("")
    if plots:
        lines += ["## Figures", ""]
        for p in plots:
            lines += [f"![{p}]({p})", ""]
    lines += ["## Caveats", ""]
    lines += [f"* {c}" for c in doc.get("caveats", [])]
    lines.append("")
    (out / "report.md").write_text("\n".join(lines))


def _fine_tuned(encoders: Sequence[Mapping[str, Any]],
                pairs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The fine-tuned encoders (``--fine-tune-encoder``) and their paired differences."""
    if not encoders:
        return []
    lines = ["## Fine-tuned encoder", "",
             "Fine-tuned on the test phase's training events (never a test target), one per "
             "seed; the systems over its vectors keep the tuned parameters (nothing re-tuned).",
             ""]
    for e in encoders:
        if e.get("refused"):
            lines.append(f"* seed {e['seed']}: not trained: {e['refused'].get('encoder')}")
            continue
        v = e["record"].get("validation", {})
        t = e["record"].get("training", {})
        lines.append(
            f"* seed {e['seed']}: `{e['record'].get('model_id')}`, validation text-only NDCG@10 "
            f"{number(v.get('base_ndcg10'))} (base) -> {number(v.get('ndcg10'))} (epoch "
            f"{v.get('best_epoch')}), {t.get('seconds', 0):.0f}s training")
    lines += ["", "| NDCG@10, fine-tuned minus base (paired) | difference | relative |",
              "|---|---|---|"]
    for label, p in pairs.items():
        d = p.get("NDCG@10", {})
        lines.append(f"| {label} | {interval(d['diff']) if 'diff' in d else '-'} | "
                     f"{relative_interval(d['relative']) if 'relative' in d else '-'} |")
    lines.append("")
    return lines


def what_portrait_is(ranker: Mapping[str, Any] | None) -> str:
    """One line saying which system the ``portrait`` row is (the fallback said plainly)."""
    if ranker is None:
        return f"`{REFERENCE}` is the tuned linear blend."
    if ranker.get("note"):
        return str(ranker["note"])
    return (f"`{REFERENCE}` is the two-stage system (retrievers, then a LightGBM lambdarank "
            "ranker trained on the test phase's training events), what the service serves once "
            f"a ranker exists; `{BLEND}` is the tuned linear blend it serves before.")


def _headline(s: Mapping[str, Any], ranker: Mapping[str, Any] | None = None) -> list[str]:
    goals = [(g, label) for g, label in (
        (s.get("goal_issue_baselines"), ISSUE_GOAL_LABEL),
        (s.get("goal"), ALL_GOAL_LABEL),
    ) if g]
    if not goals and ranker is None:
        return []
    lines = ["## Headline", "", f"* {what_portrait_is(ranker)}"]
    for goal, label in goals:
        verdict = "MET" if goal["met"] else "NOT MET"
        lines.append(
            f"* Against {label}: best is `{goal['best_baseline']}`. `{REFERENCE}` NDCG@10 "
            f"relative lift **{goal['relative_lift'] * 100:+.1f}%** "
            f"(95% paired bootstrap CI {goal['relative_ci'][0] * 100:+.1f}% to "
            f"{goal['relative_ci'][1] * 100:+.1f}%), absolute difference {number(goal['diff'])} "
            f"(CI {number(goal['diff_ci'][0])} to {number(goal['diff_ci'][1])}). "
            f"Goal (lift >= 10% and difference CI above zero): **{verdict}**."
        )
    lines.append("")
    return lines


def _setup(doc: Mapping[str, Any]) -> list[str]:
    s = doc["test"]
    ds = doc["dataset"]
    sp = doc["split"]
    enc = doc["encoder"]
    rebuilt = ds.get("rebuilt_descriptions")
    return [
        "## Setup",
        "",
        f"* Dataset: `{ds['name']}`: {ds['users']} users, {ds['items']} items, "
        f"{ds['events']} events"
        + (f"; {rebuilt} item descriptions built from each phase's training reviews only"
           if rebuilt else "")
        + ".",
        f"* Split: **{sp['kind']}**; validation {sp['validation']['cases']} users, test "
        f"{sp['test']['cases']} users ({s['targets']} targets, {s['targets_outside_catalog']} "
        "outside the catalog). "
        + ("Users with fewer than 3 distinct items are not evaluated (their events still train "
           "the global models)."
           if sp["kind"] == "leave-last-out" else
           "Evaluated: users with at least one interaction up to the cut time T and at least one "
           "new item after it; targets are all those new items (multi-item metrics)."),
        "* Protocol: full-catalog ranking (no sampled negatives) of all "
        f"{s['n_items']} items; items in the user's visible history are excluded for every "
        "system; every interaction is a target whatever its rating; stream order is "
        "(occurred_at, event_id), so tied timestamps are ordered by event id; each profile is "
        "folded with the real `portrait.fold.fold` from the user's events strictly before the "
        "test point and scored with the real `portrait.two_stage.catalog_scores` (two-stage "
        "systems) or `portrait.ranking.score_items` (blends).",
        f"* Portrait: {what_portrait_is(doc.get('ranker'))}",
        "* Global models (collaborative vectors, item-kNN) learn from the split's training events "
        "only; popularity (prior and baselines) counts only training events before each user's "
        "test time.",
        f"* Item text vectors: `{enc['model_id']}` "
        f"({enc.get('encoder', {}).get('dtype') or enc.get('dtype')}), "
        f"cache {enc.get('cache')}; collaborative vectors: {doc['collaborative']}.",
        f"* Confidence intervals: percentile bootstrap over users, "
        f"{doc['bootstrap']['resamples']} resamples, seed {doc['bootstrap']['seed']}; "
        "differences use the paired bootstrap (same users resampled).",
        "",
    ]


def _ranker(ranker: Mapping[str, Any] | None) -> list[str]:
    """The learned rankers' training figures and the reference's feature importance."""
    if not ranker:
        return []
    lines = ["## Learned ranker", "", what_portrait_is(ranker), "",
             "Settings (fixed, not tuned): `" + json.dumps(ranker["settings"]) + "`.", ""]
    if ranker["training"]:
        lines += ["Trained on the test phase's training events; validation NDCG@10 is on "
                  "held-out training users (early stopping), not on test.", "",
                  "| system | validation NDCG@10 | rounds | groups | candidate recall | "
                  "seconds |", "|---|---|---|---|---|---|"]
        for name, m in ranker["training"].items():
            lines.append(
                f"| {name} | {number(m.get('validation_ndcg10'))} | {m.get('rounds', 0):.0f} "
                f"| {m.get('groups', 0):.0f} | {number(m.get('candidate_recall'), 3)} "
                f"| {m.get('seconds', 0):.1f} |"
            )
        lines.append("")
    for name, reason in ranker.get("refused", {}).items():
        lines.append(f"* `{name}`: not trained: {reason}")
    if ranker.get("refused"):
        lines.append("")
    gains = ranker.get("importance") or {}
    total = sum(gains.values()) or 1.0
    if gains:
        lines += [f"Feature importance of `{REFERENCE}`'s ranker (total gain):", "",
                  "| feature | gain | share |", "|---|---|---|"]
        lines += [f"| {f} | {g:.1f} | {g / total * 100:.1f}% |" for f, g in gains.items()]
        lines.append("")
    return lines


def _metric_tables(s: Mapping[str, Any], order: Sequence[str]) -> list[str]:
    cols = [f"{m}@{k}" for k in KS for m in ("HR", "NDCG")] + ["Recall@10", "MRR"]
    lines = ["## Test metrics (95% bootstrap CI)", "",
             "| system | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name in order:
        m = s["systems"][name]["metrics"]
        lines.append(f"| {name} | " + " | ".join(interval(m[c]) for c in cols) + " |")
    lines += [
        "", "## Coverage and popularity of the recommendations", "",
        "Coverage@K: share of the catalog in at least one user's top K. PopPct@K: mean "
        "popularity percentile (by training interactions) of the recommended items; 100 = most "
        "popular.",
        "", "| system | Coverage@10 | Coverage@20 | PopPct@10 | PopPct@20 | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for name in order:
        li = s["systems"][name]["list"]
        lines.append(
            f"| {name} | {number(li['Coverage@10'])} | {number(li['Coverage@20'])} | "
            f"{number(li['PopPct@10'], 1)} | {number(li['PopPct@20'], 1)} | "
            f"{number(s['systems'][name]['seconds'], 1)} |"
        )
    lines += ["", f"## Paired comparisons: `{s['comparisons_vs']}` minus each system", "",
              "| other system | NDCG@10 diff | NDCG@10 lift | HR@10 diff | MRR diff |",
              "|---|---|---|---|---|"]
    for name in order:
        c = s["comparisons"].get(name)
        if c:
            lines.append(
                f"| {name} | {interval(c['NDCG@10']['diff'])} | "
                f"{relative_interval(c['NDCG@10']['relative'])} | "
                f"{interval(c['HR@10']['diff'])} | {interval(c['MRR']['diff'])} |"
            )
    main = headline_systems(order)
    lines += ["", "## NDCG@10 by history length (test split)", "",
              "| history items | users | " + " | ".join(main) + " |",
              "|---|---|" + "---|" * len(main)]
    for b in s["history_buckets"]["buckets"]:
        lines.append(f"| {b['label']} | {b['users']} | "
                     + " | ".join(number(b["values"][n]) for n in main) + " |")
    lines.append("")
    return lines


def _configurations(doc: Mapping[str, Any]) -> list[str]:
    tuned = doc["portrait_config"]
    lines = ["## Chosen configurations (validation split only)", "",
             f"Portrait, source: {tuned['source']}.", "",
             "```json", json.dumps(tuned["params"], indent=2), "```"]
    if tuned.get("validation_metrics"):
        vm = tuned["validation_metrics"]
        search = tuned.get("tuning")
        lines += ["", f"Validation: NDCG@10 {number(vm.get('NDCG@10'))}, "
                  f"HR@10 {number(vm.get('HR@10'))}"
                  + (f" after {search['trials']} trials (seed {search['seed']})."
                     if search else ".")]
    chosen = json.dumps(doc["baselines"]["chosen"])
    lines += ["", f"Baselines (grid on validation): `{chosen}`.", ""]
    return lines


def ab_markdown(
    a: str, b: str, dataset: str, split_kind: str, users: int,
    comparisons: Sequence[Any], experiment: str, split: Mapping[str, int],
    variants: Sequence[str], assigned: Mapping[str, Any],
) -> str:
    """The offline A/B summary (``ab.md``).

    Args:
        a, b: the two config files, as given.
        dataset, split_kind: what was replayed.
        users: how many test users were replayed through both.
        comparisons: :func:`~portrait.evaluation.ab.compare`'s result (A - B).
        experiment, split: the experiment name and weights of the online view.
        variants: the experiment's variants; the first stands for A, the last for B.
        assigned: :func:`~portrait.evaluation.ab.compare_assigned`'s result.
    """
    lines = [f"# Offline A/B: A = {a}, B = {b}", "",
             f"{users} users of `{dataset}` ({split_kind}, test split) replayed through both "
             "configurations; differences are A - B with paired bootstrap 95% intervals.", "",
             "| metric | A | B | A - B | relative |", "|---|---|---|---|---|"]
    for c in comparisons:
        lines.append(f"| {c.metric} | {interval(c.a.to_dict())} | {interval(c.b.to_dict())} | "
                     f"{interval(c.paired.diff.to_dict())} | "
                     f"{relative_interval(c.paired.relative.to_dict())} |")
    lines += ["", f"Online view (experiment `{experiment}`, split {split}): "
              f"{assigned['users_a']} users in `{variants[0]}` (A), {assigned['users_b']} in "
              f"`{variants[-1]}` (B)."]
    if "NDCG@10" in assigned["metrics"]:
        d = assigned["metrics"]["NDCG@10"]["diff"]
        lines.append(f"Unpaired NDCG@10 difference as assigned: {interval(d)}.")
    return "\n".join(lines) + "\n"
