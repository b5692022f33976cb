"""The offline runner never lets an event at or after a test point into that point's profile."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pytest

from portrait.collaborative import interactions
from portrait.config import ProfileConfig
from portrait.evaluation.baselines import EASE, ItemKNN, MostPopular, RecentPopular
from portrait.evaluation.runner import (
    CaseContext,
    LeakageError,
    PortraitSystem,
    run,
)
from portrait.evaluation.splits import Case, Split, leave_last_out, stream_key, temporal_split
from portrait.events import Event, ItemDismissed, ItemRated
from portrait.ranking import RankingConfig, TagTable, recommend
from tests.unit.builders import catalog

DAY = 86_400.0
ITEMS = catalog(40)
IDS = list(ITEMS.ids)


def synthetic_events(n_users: int = 16, per_user: int = 12, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for u in range(n_users):
        items = rng.choice(len(IDS), size=per_user, replace=False)
        t = 1_000_000.0 + u * 3_600.0
        for j, row in enumerate(items):
            t += float(rng.integers(1, 3)) * DAY
            events.append(
                ItemRated(f"e{u}-{j}", f"u{u}", t, IDS[row], float(rng.integers(1, 11)) / 2)
            )
    return sorted(events, key=lambda e: (e.occurred_at, e.user_id, e.event_id))


def portrait_system(name: str = "portrait") -> PortraitSystem:
    return PortraitSystem(
        name, ProfileConfig(), RankingConfig(popularity_weight=0.5), ITEMS, TagTable(ITEMS)
    )


def systems_for(split: Split) -> list:
    inc = interactions(split.train_events, IDS).matrix
    return [
        portrait_system(),
        MostPopular(),
        RecentPopular(10.0),
        ItemKNN(inc, IDS, 10),
        ItemKNN(inc, IDS, 10, name="item-knn-seq", recency_half_life=2.0),
        EASE(inc, IDS, 5.0),
    ]


def ranks(split: Split) -> dict[str, list[tuple[float, ...]]]:
    result = run(split, systems_for(split), IDS)
    return {name: r.ranks for name, r in result.systems.items()}


def test_changing_the_future_leaves_validation_untouched() -> None:
    events = synthetic_events()
    val, test = leave_last_out(events)
    assert len(val.cases) == 16
    # Move every user's held-out test event to another item the user never touched: it is
    # in the future of every validation case, so no validation rank may change.
    test_ids = {c.key[1] for c in test.cases}
    seen: dict[str, set[str]] = {}
    for e in events:
        seen.setdefault(e.user_id, set()).add(e.item_id)  # type: ignore[attr-defined]
    changed = []
    for e in events:
        if e.event_id in test_ids:
            unused = next(i for i in reversed(IDS) if i not in seen[e.user_id])
            e = dataclasses.replace(e, item_id=unused, rating=5.0)  # type: ignore[arg-type]
        changed.append(e)
    val2, test2 = leave_last_out(changed)
    assert ranks(val) == ranks(val2)
    assert ranks(test) != ranks(test2)  # the mutation is real: test targets did change


def test_future_dismissals_after_the_temporal_cut_change_nothing() -> None:
    events = synthetic_events()
    val, test = temporal_split(events, test_quantile=0.6)
    cut = test.cases[0].key[0]
    # Every user dismisses each of their test targets after the cut. Folded, a dismissal
    # excludes the item and pushes its vector away; it must not reach the test profiles.
    extra = [
        ItemDismissed(f"d{c.user_id}-{t}", c.user_id, cut + 10 * DAY + i, t)
        for c in test.cases
        for i, t in enumerate(c.targets)
    ]
    val2, test2 = temporal_split(events + extra, test_quantile=0.6)
    assert [c.targets for c in test2.cases] == [c.targets for c in test.cases]
    assert ranks(test) == ranks(test2)


class SpySession:
    def __init__(self, log: list) -> None:
        self.log = log
        self.seen: list[Event] = []

    def observe(self, events: Sequence[Event]) -> None:
        self.seen.extend(events)

    def scores(self, ctx: CaseContext) -> np.ndarray:
        self.log.append((ctx.case, list(self.seen), ctx.counts.copy()))
        return np.zeros(len(IDS))


class Spy:
    name = "spy"

    def __init__(self) -> None:
        self.log: list = []

    def session(self, user_id: str) -> SpySession:
        return SpySession(self.log)


@pytest.mark.parametrize("kind", ["leave-last-out", "temporal"])
def test_every_observed_event_precedes_its_test_point(kind: str) -> None:
    events = synthetic_events()
    splits = leave_last_out(events) if kind == "leave-last-out" else temporal_split(events)
    for split in splits:
        spy = Spy()
        run(split, [spy], IDS)
        assert len(spy.log) == len(split.cases) > 0
        for case, seen, counts in spy.log:
            assert all(stream_key(e) < case.key for e in seen)
            assert all(e.occurred_at <= case.time for e in seen)
            assert all(e.user_id == case.user_id for e in seen)
            # popularity counts only training events up to the horizon
            expected = np.zeros(len(IDS))
            for e in split.train_events:
                if e.occurred_at <= case.horizon:
                    expected[IDS.index(e.item_id)] += 1  # type: ignore[attr-defined]
            assert counts.tolist() == expected.tolist()


def test_runner_refuses_a_case_whose_profile_would_see_the_future() -> None:
    events = synthetic_events(n_users=2)
    _, test = leave_last_out(events)
    case = test.cases[0]
    stream = test.streams[case.user_id]
    bad = dataclasses.replace(case, cutoff=len(stream) + 1)  # includes the held-out event
    leaky = dataclasses.replace(test, cases=(bad,))
    with pytest.raises(LeakageError):
        run(leaky, [portrait_system()], IDS)


def test_held_out_items_are_never_in_the_visible_history() -> None:
    val, test = leave_last_out(synthetic_events())
    for split in (val, test):
        for case in split.cases:
            assert not set(case.targets) & set(split.history_items(case))
        train_keys = {e.event_id for e in split.train_events}
        for case in split.cases:
            future = split.streams[case.user_id][case.cutoff :]
            assert not train_keys & {e.event_id for e in future}


def test_portrait_top_k_is_what_recommend_returns() -> None:
    events = synthetic_events()
    _, test = leave_last_out(events)
    system = portrait_system()
    result = run(test, [system], IDS, top_k=10)
    for i, case in enumerate(test.cases[:6]):
        session = system.session(case.user_id)
        session.observe(test.streams[case.user_id][: case.cutoff])
        from portrait.evaluation.runner import PopularityClock
        from portrait.ranking import popularity_scores

        clock = PopularityClock(test.train_events, {x: j for j, x in enumerate(IDS)}, len(IDS))
        pop = popularity_scores(clock.counts_until(case.horizon))
        recs = recommend(
            session.state, system.profile, system.ranking, ITEMS, system.tag_table, 10,
            popularity=pop, exclude=test.history_items(case), explain_results=False,
        )
        assert [r.item_id for r in recs] == [IDS[r] for r in result.systems["portrait"].top[i]]


def test_case_keys_come_from_the_held_out_event() -> None:
    val, test = leave_last_out(synthetic_events())
    for split in (val, test):
        for case in split.cases:
            held_out = split.streams[case.user_id][case.cutoff]
            assert case.key == stream_key(held_out)
            assert case.horizon < held_out.occurred_at
            assert isinstance(case, Case)
