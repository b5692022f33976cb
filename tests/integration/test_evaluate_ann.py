"""``portrait evaluate --ann`` ranks through the approximate index: on a catalog small enough
for every search to cover the index, each Portrait system scores what the exact run scores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from offline import cli
from tests.fakes import HashingEncoder
from tests.integration.test_evaluate_small import COMMON, write_dataset


def _ndcg(out: Path) -> dict[str, float]:
    doc = json.loads((out / "metrics.json").read_text())
    return {name: s["metrics"]["NDCG@10"]["mean"] for name, s in doc["test"]["systems"].items()}


def test_evaluate_with_the_index_matches_the_exact_run_on_a_small_catalog(
    tmp_path: Path,
) -> None:
    data = write_dataset(tmp_path / "data")
    runs = {}
    for mode in ("exact", "ann"):
        out = tmp_path / mode
        args = ["evaluate", *COMMON, "--data-dir", str(data), "--out", str(out), "--trials",
                "2", "--no-plots", "--cache-dir", str(tmp_path / "cache")]
        assert cli.main(args + (["--ann"] if mode == "ann" else []),
                        encoder=HashingEncoder(dim=32)) == 0
        runs[mode] = _ndcg(out)
        indexes = json.loads((out / "metrics.json").read_text())["approximate_index"]
        if mode == "exact":
            assert indexes is None
        else:  # the systems did rank through an index over the whole catalog
            assert indexes and all(ix["rows"] == 24 for ix in indexes)
    assert runs["ann"].keys() == runs["exact"].keys()
    portrait = [n for n in runs["exact"] if n.startswith(("portrait", "blend"))]
    assert len(portrait) > 5
    for name in portrait:
        assert runs["ann"][name] == pytest.approx(runs["exact"][name], abs=1e-9), name
