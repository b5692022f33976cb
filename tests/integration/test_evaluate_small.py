"""The whole offline pipeline (evaluate, tune, ab) on a tiny generic-CSV dataset, in seconds.

A deterministic hashing encoder stands in for vLLM; everything else is the real code path:
the generic loader, text features of reviews and searches, splits, collaborative vectors, the
real profile fold and ranker, baselines, bootstrap, plots and the report.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from offline import cli
from portrait.evaluation.roster import BASELINES
from tests.fakes import HashingEncoder

GENRES = ("coffee", "running", "audio", "books")
ADJECTIVES = ("compact", "premium", "classic", "budget", "travel", "pro")


def write_dataset(folder: Path, n_users: int = 30, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(24):
        genre = GENRES[i % len(GENRES)]
        adj = ADJECTIVES[i % len(ADJECTIVES)]
        items.append(
            (f"it{i}", f"{adj.title()} {genre} item {i}", f"A {adj} pick for {genre} fans.", genre)
        )
    with open(folder / "items.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "title", "description", "tags"])
        w.writerows(items)
    with open(folder / "interactions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["user_id", "item_id", "timestamp", "event_type", "rating", "text"])
        for u in range(n_users):
            fav = GENRES[u % len(GENRES)]
            t = 1_700_000_000 + u * 1000
            pool = [it for it in items if it[3] == fav] + [it for it in items if it[3] != fav]
            order = rng.permutation(len(pool))
            chosen = [pool[j] for j in order if j < 6 or rng.random() < 0.15][:9]
            if rng.random() < 0.5:
                t += 60
                w.writerow([f"u{u}", "", t, "search", "", f"{fav} gear"])
            for item_id, title, _, genre in chosen:
                t += int(rng.integers(600, 86_400))
                w.writerow([f"u{u}", item_id, t, "view", "", ""])
                kind = rng.choice(["click", "purchase", "rating", "review"])
                t += 30
                if kind == "rating":
                    w.writerow([f"u{u}", item_id, t, "rating", float(rng.integers(2, 6)), ""])
                elif kind == "review":
                    w.writerow(
                        [
                            f"u{u}",
                            item_id,
                            t,
                            "review",
                            4.0,
                            f"Great {genre} item, love the {title.lower()}",
                        ]
                    )
                else:
                    w.writerow([f"u{u}", item_id, t, kind, "", ""])
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("generic-small"))


COMMON = ["--dataset", "generic", "--resamples", "100", "--collab-dim", "8"]


def test_evaluate_writes_the_report(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    encoder = HashingEncoder(dim=32)
    rc = cli.main(
        [
            "evaluate",
            *COMMON,
            "--data-dir",
            str(data_dir),
            "--out",
            str(out),
            "--trials",
            "4",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        encoder=encoder,
    )
    assert rc == 0
    for name in (
        "report.md",
        "metrics.json",
        "metrics_by_k.png",
        "ndcg_by_history.png",
        "ablations.png",
        "tuned-config.json",
    ):
        assert (out / name).is_file(), name
        assert (out / name).stat().st_size > 0
    doc = json.loads((out / "metrics.json").read_text())
    systems = doc["test"]["systems"]
    for name in (
        "portrait",
        "portrait-blend",
        "blend-defaults",
        "blend-no-decay",
        "blend-text-only",
        "most-popular",
        "recent-popular",
        "item-knn",
        "item-knn-seq",
        "ease",
    ):
        assert name in systems
        for metric in ("HR@5", "HR@10", "HR@20", "NDCG@10", "MRR"):
            m = systems[name]["metrics"][metric]
            assert m["low"] <= m["mean"] <= m["high"]
    assert doc["test"]["cases"] == doc["split"]["test"]["cases"] > 10
    assert doc["test"]["goal"]["best_baseline"] in BASELINES
    assert doc["baselines"]["chosen"]["ease"]["l2"] > 0
    report = (out / "report.md").read_text()
    assert "## Test metrics" in report and "portrait" in report and "Timing" in report
    # the reference is the two-stage system; its ranker's figures and importance are reported
    ranker = doc["ranker"]
    assert ranker["reference"] == "two-stage" and ranker["note"] is None
    assert {"portrait", "portrait-seed1", "portrait-no-text-features"} <= set(ranker["training"])
    assert ranker["training"]["portrait"]["groups"] >= ranker["settings"]["min_groups"]
    assert "portrait-no-text-features" in systems and ranker["importance"]
    assert "## Learned ranker" in report and "two-stage system" in report.split("## Setup")[0]
    # the cache is used on a second run: no new encoder calls for item texts or text events
    calls = len(encoder.calls)
    cli.main(
        [
            "evaluate",
            *COMMON,
            "--data-dir",
            str(data_dir),
            "--out",
            str(tmp_path / "again"),
            "--trials",
            "1",
            "--no-plots",
            "--cache-dir",
            str(tmp_path / "cache"),
        ],
        encoder=encoder,
    )
    assert len(encoder.calls) == calls


def test_tune_then_evaluate_with_the_config_then_ab(data_dir: Path, tmp_path: Path) -> None:
    encoder = HashingEncoder(dim=32)
    config = tmp_path / "configs" / "tuned.json"
    assert (
        cli.main(
            [
                "tune",
                *COMMON,
                "--data-dir",
                str(data_dir),
                "--trials",
                "3",
                "--out",
                str(config),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            encoder=encoder,
        )
        == 0
    )
    doc = json.loads(config.read_text())
    assert doc["version"] == 1
    assert {
        "created",
        "dataset",
        "profile",
        "ranking",
        "item_vectors",
        "validation_metrics",
    } <= set(doc)
    assert 0.0 <= doc["item_vectors"]["alpha"] <= 1.0
    from portrait.config import ProfileConfig
    from portrait.tuned_config import TunedConfig

    tuned = TunedConfig.from_document(doc)
    assert tuned.profile == ProfileConfig.from_dict(doc["profile"])
    collab = tuned.item_vectors.collaborative
    assert collab is not None and collab.dim == 8
    assert tuned.to_document() == doc

    out = tmp_path / "eval"
    assert (
        cli.main(
            [
                "evaluate",
                *COMMON,
                "--data-dir",
                str(data_dir),
                "--config",
                str(config),
                "--out",
                str(out),
                "--no-plots",
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            encoder=encoder,
        )
        == 0
    )
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["portrait_config"]["params"]["profile"] == doc["profile"]

    defaults = tmp_path / "configs" / "defaults.json"
    defaults.write_text(json.dumps({**doc, "ranking": {}, "profile": {}}))
    ab_out = tmp_path / "ab"
    assert (
        cli.main(
            [
                "ab",
                "--dataset",
                "generic",
                "--data-dir",
                str(data_dir),
                "--a",
                str(config),
                "--b",
                str(defaults),
                "--resamples",
                "100",
                "--out",
                str(ab_out),
                "--cache-dir",
                str(tmp_path / "cache"),
            ],
            encoder=encoder,
        )
        == 0
    )
    ab = json.loads((ab_out / "ab.json").read_text())
    assert ab["users"] > 10
    assert ab["assigned"]["users_a"] + ab["assigned"]["users_b"] == ab["users"]
    assert (ab_out / "ab.md").read_text().startswith("# Offline A/B")
