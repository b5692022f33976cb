"""Progress bars (on stderr) around the long offline steps: encoding, replays, tuning."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from portrait.evaluation.runner import RunResult, System, run
from portrait.evaluation.splits import Split
from portrait.evaluation.tuning import PortraitFactory, TuningResult, tune_portrait
from portrait.progress import on_bar


def progress_bar(total: int, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr that disappears when closed (stdout stays for results)."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)


def run_with_progress(
    split: Split, systems: Sequence[System], item_ids: Sequence[str], desc: str
) -> RunResult:
    """:func:`~portrait.evaluation.runner.run` with a bar counting users."""
    bar = progress_bar(len(split.cases), desc, "user")
    try:
        return run(split, systems, item_ids, progress=on_bar(bar))
    finally:
        bar.close()


def tune_with_progress(
    validation: Split, factory: PortraitFactory, budget: int, seed: int
) -> TuningResult:
    """:func:`~portrait.evaluation.tuning.tune_portrait` with a bar counting trials."""
    bar = progress_bar(budget, "tune Portrait (validation)", "trial")
    try:
        return tune_portrait(validation, factory, budget=budget, seed=seed, progress=on_bar(bar))
    finally:
        bar.close()
