"""The evaluation's Portrait roster: the two-stage reference, its ablations, the blend's, the
fallback when a ranker cannot be trained, and a ranker that never learns from a test point.

The world is the walk of ``test_two_stage``: users mostly step from item k to k+1, so a ranker
trains on a few dozen users in about a second.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from offline.report import write_report
from portrait.evaluation.roster import (
    BLEND,
    BLEND_FALLBACK,
    REFERENCE,
    TWO_STAGE,
    Roster,
    default_params,
    portrait_systems,
    ranker_variants,
)
from portrait.evaluation.runner import PortraitSystem, run
from portrait.evaluation.splits import Split, leave_last_out
from portrait.evaluation.tuning import PortraitFactory, PortraitParams
from portrait.evaluation.two_stage_system import TwoStageSystem
from portrait.events import Event, ItemViewed
from portrait.learned_ranker import RankerSettings
from portrait.ranker_features import TEXT_FEATURES
from portrait.retrieval import RETRIEVERS
from tests.unit.builders import catalog

ITEMS = catalog(n=40)
IDS = list(ITEMS.ids)
SETTINGS = RankerSettings(candidates=20, neighbours=10, rounds=30, min_groups=20,
                          min_data_in_leaf=5, labels_per_user=3, threads=1)
T0 = 1_600_000_000.0


def walk_events(users: int = 60, length: int = 8, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for u in range(users):
        k = int(rng.integers(len(IDS)))
        for step in range(length):
            events.append(ItemViewed(f"e{u}-{step}", f"u{u}", T0 + 3600 * step + u, f"i{k}"))
            k = (k + 1) % len(IDS) if rng.random() < 0.85 else int(rng.integers(len(IDS)))
    return events


def factory() -> PortraitFactory:
    tags = [ITEMS.tags(i) for i in range(len(IDS))]
    return PortraitFactory(IDS, ITEMS.matrix, None, tags, model_id="test")


def params() -> PortraitParams:
    return default_params(has_collab=False)


def test_the_roster_holds_the_two_stage_reference_its_ablations_and_the_blends() -> None:
    _, test = leave_last_out(walk_events())
    roster = portrait_systems(factory(), params(), False, test, SETTINGS)
    names = [s.name for s in roster.systems]
    assert names[0] == REFERENCE and isinstance(roster.systems[0], TwoStageSystem)
    assert roster.reference == TWO_STAGE and roster.note is None and not roster.refused
    expected = {f"{REFERENCE}-seed1", f"{REFERENCE}-no-text-features", BLEND, "blend-defaults",
                "blend-no-decay", "blend-no-short-term", "blend-no-tags", "blend-no-popularity"}
    expected |= {f"{REFERENCE}-no-{r}" for r in RETRIEVERS}
    assert expected <= set(names) and len(names) == len(set(names))
    # no collaborative vectors: no text-only / collab-only blends
    assert not {"blend-text-only", "blend-collab-only"} & set(names)
    by_name = {s.name: s for s in roster.systems}
    assert isinstance(by_name[BLEND], PortraitSystem)
    seed1 = by_name[f"{REFERENCE}-seed1"]
    assert isinstance(seed1, TwoStageSystem) and seed1.bundle.settings.seed == SETTINGS.seed + 1
    no_text = by_name[f"{REFERENCE}-no-text-features"]
    assert isinstance(no_text, TwoStageSystem)
    assert not set(TEXT_FEATURES) & set(no_text.bundle.features)
    assert set(roster.training) == {n for n in names if isinstance(by_name[n], TwoStageSystem)}
    for figures in roster.training.values():
        assert figures["groups"] >= SETTINGS.min_groups and figures["seconds"] > 0
    assert roster.importance and list(roster.importance.values()) == sorted(
        roster.importance.values(), reverse=True)
    assert set(roster.importance) == set(SETTINGS.feature_names)


def test_each_retriever_ablation_drops_exactly_that_retriever() -> None:
    variants = ranker_variants(RankerSettings())
    for r in RETRIEVERS:
        assert variants[f"{REFERENCE}-no-{r}"].retrievers == tuple(x for x in RETRIEVERS if x != r)
    assert variants[f"{REFERENCE}-no-text-features"].extras == tuple(
        e for e in RankerSettings().extras if e not in TEXT_FEATURES)


def test_a_ranker_refused_for_too_little_data_falls_back_to_the_blend_and_says_so(
    tmp_path: Path,
) -> None:
    _, test = leave_last_out(walk_events(users=12))
    roster = portrait_systems(factory(), params(), False, test, SETTINGS)
    assert roster.reference == BLEND_FALLBACK
    assert REFERENCE in roster.refused and "needs at least" in roster.refused[REFERENCE]
    assert roster.note is not None and "not trained" in roster.note
    reference = roster.systems[0]
    assert reference.name == REFERENCE and isinstance(reference, PortraitSystem)
    assert not any(isinstance(s, TwoStageSystem) for s in roster.systems)
    # the fallback ranks exactly as the blend
    result = run(test, roster.systems, IDS)
    assert result.systems[REFERENCE].ranks == result.systems[BLEND].ranks
    # and the report's headline says so plainly
    from portrait.evaluation.summary import summarise_run

    doc = _doc(summarise_run(result, REFERENCE, 20, 0), roster)
    write_report(doc, tmp_path, [])
    headline = (tmp_path / "report.md").read_text().split("## Setup")[0]
    assert roster.note in headline


def _doc(summary: dict[str, Any], roster: Roster) -> dict[str, Any]:
    stats = {"cases": summary["cases"]}
    return {
        "dataset": {"name": "walk", "users": 12, "items": len(IDS), "events": 0},
        "created": "now", "command": "portrait evaluate",
        "split": {"kind": "leave-last-out", "validation": stats, "test": stats},
        "encoder": {"model_id": "test", "cache": None}, "collaborative": None,
        "bootstrap": {"resamples": 20, "seed": 0},
        "portrait_config": {"source": "test", "params": {}}, "baselines": {"chosen": {}},
        "ranker": roster.to_dict(), "test": summary, "timings": {"total": 1.0},
    }


def _move_held_out(events: list[Event], split: Split) -> list[Event]:
    """Every user's held-out item moved to an item that user never touched, in every event
    of theirs (from the held-out one on), so each user's cases stay where they were."""
    held_out = {(c.user_id, c.targets[0]) for c in split.cases}
    seen: dict[str, set[str]] = {}
    for e in events:
        assert isinstance(e, ItemViewed)
        seen.setdefault(e.user_id, set()).add(e.item_id)
    to = {u: next(i for i in reversed(IDS) if i not in seen[u]) for u, _ in held_out}
    out: list[Event] = []
    for e in events:
        assert isinstance(e, ItemViewed)
        if (e.user_id, e.item_id) in held_out:
            e = dataclasses.replace(e, item_id=to[e.user_id])
        out.append(e)
    return out


@pytest.mark.parametrize("phase", [0, 1])
def test_the_two_stage_system_never_learns_from_a_test_point(phase: int) -> None:
    events = walk_events()
    split = leave_last_out(events)[phase]
    moved = leave_last_out(_move_held_out(events, split))[phase]
    assert [c.targets for c in moved.cases] != [c.targets for c in split.cases]
    assert [c.key for c in moved.cases] == [c.key for c in split.cases]
    profile = factory().system(REFERENCE, params())
    a = TwoStageSystem.trained(REFERENCE, profile, split, SETTINGS)
    b = TwoStageSystem.trained(REFERENCE, profile, moved, SETTINGS)
    # the ranker and its neighbour models are the same bytes: the held-out events never
    # reached training, and what each case ranks on top is the same
    assert a.bundle.to_bytes() == b.bundle.to_bytes()
    ra, rb = run(split, [a], IDS), run(moved, [b], IDS)
    assert np.array_equal(ra.systems[REFERENCE].top, rb.systems[REFERENCE].top)
    assert ra.systems[REFERENCE].ranks != rb.systems[REFERENCE].ranks  # targets did move


def test_training_on_every_event_would_have_changed_the_ranker() -> None:
    """The check above can fail: a split whose training events include the held-out ones
    trains another ranker."""
    events = walk_events()
    _, test = leave_last_out(events)
    leaky = dataclasses.replace(test, train_events=tuple(events))
    moved = dataclasses.replace(test, train_events=tuple(_move_held_out(events, test)))
    profile = factory().system(REFERENCE, params())
    a = TwoStageSystem.trained(REFERENCE, profile, leaky, SETTINGS)
    b = TwoStageSystem.trained(REFERENCE, profile, moved, SETTINGS)
    assert a.bundle.to_bytes() != b.bundle.to_bytes()
