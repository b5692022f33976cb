"""The evaluation report's figures (PNG, matplotlib's non-interactive backend)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from portrait.evaluation.roster import REFERENCE, headline_systems
from portrait.evaluation.summary import CURVE_KS, KS

DPI = 120


def write_plots(summary: Mapping[str, Any], out: Path) -> list[str]:
    """Write the figures of a test summary into ``out``.

    Args:
        summary: :func:`~portrait.evaluation.summary.summarise_run`'s result.
        out: the output folder.

    Returns:
        The file names written: metrics by cut-off K, NDCG@10 by history length (when any
        bucket has users), and the ablation bar chart.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    systems = summary["systems"]
    main = headline_systems(systems)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in main:
        for ax, key in zip(axes, ("HR", "NDCG"), strict=True):
            ax.plot(CURVE_KS, systems[name]["curves"][key], label=name,
                    linewidth=2.4 if name == REFERENCE else 1.4)
    for ax, key in zip(axes, ("HR@K", "NDCG@K"), strict=True):
        ax.set_xlabel("K")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        for k in KS:
            ax.axvline(k, color="grey", alpha=0.2, linewidth=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Full-catalog ranking metrics by cut-off K (test split)")
    fig.tight_layout()
    fig.savefig(out / "metrics_by_k.png", dpi=DPI)
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
        fig.savefig(out / "ndcg_by_history.png", dpi=DPI)
        plt.close(fig)
        files.append("ndcg_by_history.png")

    names = sorted(systems, key=lambda s: systems[s]["metrics"]["NDCG@10"]["mean"])
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(names) + 1.5))
    ndcg = [systems[s]["metrics"]["NDCG@10"] for s in names]
    means = [m["mean"] for m in ndcg]
    lows = [m["mean"] - m["low"] for m in ndcg]
    highs = [m["high"] - m["mean"] for m in ndcg]
    colors = [
        "tab:red" if s == REFERENCE else "tab:blue" if s.startswith((REFERENCE, "blend-"))
        else "tab:grey"
        for s in names
    ]
    ax.barh(names, means, xerr=[lows, highs], color=colors, capsize=3)
    ax.set_xlabel("NDCG@10 (95% bootstrap CI)")
    ax.set_title("Portrait ablations and baselines (test split)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ablations.png", dpi=DPI)
    plt.close(fig)
    files.append("ablations.png")
    return files
