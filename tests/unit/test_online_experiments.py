"""The pure parts of online experiments: interleaving, attribution, the report's statistics,
the optional request_id on item events, and the experiment modes."""

from __future__ import annotations

import dataclasses
import random

import pytest

from portrait import codec
from portrait.attribution import FOREIGN, NOT_DISPLAYED, UNKNOWN, attribute
from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.events import ItemClicked, ItemDismissed, ItemPurchased, ItemRated, ItemViewed
from portrait.experiment_report import build_report
from portrait.experiment_stats import (
    bootstrap_mean_difference,
    rate_difference,
    sign_test,
    users_needed,
    wilson,
)
from portrait.experiments import Experiment
from portrait.impression import Impression, check_shown
from portrait.interleaving import team_draft
from portrait.ranking import RankingConfig
from portrait.variants import Variant, VariantPolicy


def imp(rid: str, user: str, items: str, at: float, variant: str = "a",
        teams: str | None = None, experiment: str = "x") -> Impression:
    return Impression(rid, user, experiment, variant, "h", -1, tuple(items.split()), at,
                      None if teams is None else tuple(teams.split()))


# -- interleaving ----------------------------------------------------------------------------


def test_team_draft_takes_each_teams_best_remaining_item_in_turn() -> None:
    a, b = ["1", "2", "3", "4"], ["2", "5", "1", "6"]
    for seed in range(50):
        items, teams = team_draft(a, b, 4, team_a="A", team_b="B", seed=seed)
        assert len(set(items)) == 4 and teams.count("A") == teams.count("B") == 2
        for pos, (item, team) in enumerate(zip(items, teams, strict=True)):
            mine = a if team == "A" else b
            # the team's best item not already taken by an earlier position
            assert item == next(i for i in mine if i not in items[:pos])


def test_team_draft_is_fair_and_reproducible() -> None:
    firsts = [team_draft(["1"], ["2"], 1, team_a="A", team_b="B", seed=s)[1][0]
              for s in range(400)]
    assert 150 < firsts.count("A") < 250  # a fair coin decides who picks first
    assert team_draft(["1", "2"], ["3"], 2, team_a="A", team_b="B", seed=7) == \
        team_draft(["1", "2"], ["3"], 2, team_a="A", team_b="B", seed=7)
    # an exhausted team passes its turn; both exhausted stops early
    items, teams = team_draft(["1", "2", "3"], ["1"], 5, team_a="A", team_b="B", seed=1)
    assert sorted(items) == ["1", "2", "3"] and len(teams) == 3


# -- attribution -----------------------------------------------------------------------------


def test_explicit_request_ids_are_honoured_or_ignored_by_reason() -> None:
    served = [imp("r1", "alice", "m1 m2 m3", 100.0), imp("r2", "bob", "m4", 100.0)]
    events = [
        ItemClicked("e1", "alice", 110.0, "m2", request_id="r1"),
        ItemClicked("e2", "alice", 111.0, "m4", request_id="r2"),  # bob's list
        ItemClicked("e3", "alice", 112.0, "m1", request_id="nope"),
        ItemClicked("e4", "alice", 113.0, "m9", request_id="r1"),  # not in the list
        ItemDismissed("e5", "alice", 114.0, "m3", request_id="r1"),  # never credited
    ]
    out = attribute(served, events)
    assert [(a.request_id, a.item_id, a.position, a.explicit) for a in out.attributed] == [
        ("r1", "m2", 1, True)]
    assert out.ignored == {UNKNOWN: 1, FOREIGN: 1, NOT_DISPLAYED: 1}


def test_the_window_rule_credits_the_latest_list_that_held_the_item() -> None:
    served = [imp("old", "u", "m1 m2", 10.0), imp("new", "u", "m2 m3", 50.0),
              imp("later", "u", "m1", 5000.0)]
    events = [
        ItemViewed("e1", "u", 60.0, "m2"),  # both held m2: the latest before it wins
        ItemViewed("e2", "u", 70.0, "m1"),  # only "old" held m1
        ItemPurchased("e3", "u", 3000.0, "m3"),  # "new" held m3, but 2950 s > window
        ItemViewed("e4", "v", 60.0, "m2"),  # another user: organic
        ItemViewed("e5", "u", 9.0, "m1"),  # before any list
    ]
    out = attribute(served, reversed(events), window_s=1000.0)  # input order is irrelevant
    assert [(a.event_id, a.request_id) for a in out.attributed] == [("e1", "new"), ("e2", "old")]
    assert sum(out.ignored.values()) == 0  # organic events are not "ignored" ids


def test_reported_shown_items_limit_attribution() -> None:
    served = imp("r", "u", "m1 m2 m3", 0.0)
    with pytest.raises(InvalidField, match="item_ids"):
        check_shown(served, ("m9",))
    shown = dataclasses.replace(served, shown=check_shown(served, ("m2", "m1")))
    assert shown.shown == ("m1", "m2")  # kept in served order
    out = attribute([shown], [ItemClicked("e1", "u", 1.0, "m3", request_id="r"),
                              ItemClicked("e2", "u", 2.0, "m3")])
    assert out.attributed == [] and out.ignored[NOT_DISPLAYED] == 1


# -- statistics ------------------------------------------------------------------------------


def test_wilson_and_newcombe_match_published_values() -> None:
    lo, hi = wilson(0, 10).low, wilson(0, 10).high
    assert (lo, round(hi, 4)) == (0.0, 0.2775)
    assert (round(wilson(5, 10).low, 4), round(wilson(5, 10).high, 4)) == (0.2366, 0.7634)
    # Newcombe (1998), table II, example (a): 56/70 - 48/80 = 0.2, method 10 [0.0524, 0.3339]
    d = rate_difference(48, 80, 56, 70)
    assert round(d.estimate.value, 4) == 0.2
    assert (round(d.estimate.low, 4), round(d.estimate.high, 4)) == (0.0524, 0.3339)
    assert d.p_value < 0.01


def test_sign_test_and_sample_size() -> None:
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(5, 5) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(60, 40) == pytest.approx(0.0569, abs=1e-4)
    assert sign_test(6000, 4000) < 1e-80  # large n stays finite
    # the textbook 0.10 vs 0.15 at 95% / 80% power: 683 per arm
    assert users_needed(0.10, 0.15) == 683


def test_bootstrap_difference_sees_a_shift_and_not_noise() -> None:
    rng = random.Random(0)
    a = [rng.random() for _ in range(300)]
    assert bootstrap_mean_difference(a, [x + 0.2 for x in a]).estimate.excludes(0.0)
    assert not bootstrap_mean_difference(a[:150], a[150:]).estimate.excludes(0.0)


# -- the report ------------------------------------------------------------------------------


def _ab_sample(n: int, rate_a: float, rate_b: float) -> tuple[list[Impression], list]:  # type: ignore[type-arg]
    rng = random.Random(1)
    served, events = [], []
    for i in range(n):
        variant = "a" if i % 2 else "b"
        served.append(imp(f"r{i}", f"u{i}", "m1 m2 m3", 0.0, variant))
        if rng.random() < (rate_a if variant == "a" else rate_b):
            events.append(ItemRated(f"e{i}", f"u{i}", 5.0, "m2", 5.0, request_id=f"r{i}"))
    return served, events


def test_report_finds_a_real_difference_and_warns_on_a_small_sample() -> None:
    served, events = _ab_sample(2000, 0.05, 0.15)
    report = build_report("x", served, attribute(served, events), 10, variants=("a", "b"))
    a, b = report["variants"]["a"], report["variants"]["b"]
    assert a["impressions"] == b["impressions"] == 1000 and a["users"] == 1000
    assert a["ctr"]["ci_low"] < 0.05 < a["ctr"]["ci_high"]
    assert b["conversion"]["value"] == b["ctr"]["value"]  # ratings of 5 convert
    assert b["mrr"]["value"] == pytest.approx(b["ctr"]["value"] / 2)  # always position 1
    assert a["coverage"]["value"] == 0.3
    diff = report["differences"]["b"]["ctr"]
    assert diff["ci_low"] > 0 and diff["p_value"] < 1e-6
    assert report["differences"]["b"]["mrr"]["ci_low"] > 0
    assert report["warnings"] == []

    served, events = _ab_sample(40, 0.05, 0.15)
    small = build_report("x", served, attribute(served, events), 10, variants=("a", "b"))
    assert any("too small to tell" in w for w in small["warnings"])


def test_interleaving_credits_teams_and_reports_the_preference() -> None:
    served, events = [], []
    for i in range(30):  # B's item is taken by 20 users, A's by 5, 5 take nothing
        served.append(imp(f"r{i}", f"u{i}", "m1 m2", 0.0, "interleave", teams="A B"))
        if i < 20:
            events.append(ItemClicked(f"e{i}", f"u{i}", 1.0, "m2", request_id=f"r{i}"))
        elif i < 25:
            events.append(ItemClicked(f"e{i}", f"u{i}", 1.0, "m1"))  # window rule
    report = build_report("x", served, attribute(served, events), 4, variants=("A", "B"))
    pref = report["interleaving"]["by_user"]
    assert (pref["wins"], pref["losses"], pref["ties"]) == (20, 5, 5)
    assert pref["share"]["value"] == 0.8 and pref["p_value"] == pytest.approx(sign_test(20, 5))
    assert report["variants"]["B"]["interactions"] == 20
    assert report["variants"]["A"]["mrr"]["value"] == pytest.approx(5 / 30)  # position 0


# -- events and experiments ------------------------------------------------------------------


def test_request_id_is_optional_and_leaves_old_payloads_unchanged() -> None:
    plain = ItemRated("e", "u", 1.0, "m", 4.0)
    assert "request_id" not in codec.to_dict(plain)
    old_bytes = codec.encode(plain)
    assert codec.decode_stored(old_bytes) == plain and plain.request_id is None
    tagged = codec.from_dict({**codec.to_dict(plain), "request_id": "r-1"})
    assert codec.decode(codec.encode(tagged)) == tagged and tagged != plain
    with pytest.raises(InvalidField, match="request_id"):
        codec.from_dict({**codec.to_dict(plain), "request_id": ""})


def test_interleave_mode_needs_two_variants_sharing_a_profile_config() -> None:
    exp = Experiment.from_config({"name": "x", "split": {"a": 1, "b": 1}, "mode": "interleave"})
    assert exp.interleaved and exp.assign("anyone") == "a"
    with pytest.raises(InvalidField, match="mode"):
        Experiment.from_config({"name": "x", "split": {"a": 1}, "mode": "bandit"})
    with pytest.raises(InvalidField, match="two"):
        Experiment("x", (("a", 1),), "interleave")
    same = ProfileConfig()
    a = Variant("a", same, RankingConfig())
    b = Variant("b", same, RankingConfig(popularity_weight=5.0))
    policy = VariantPolicy({"a": a, "b": b}, exp)
    assert policy.interleaved == (a, b) and a.config_hash() != b.config_hash()
    other = Variant("b", ProfileConfig(recent_items=3), RankingConfig())
    with pytest.raises(InvalidField, match="share one profile"):
        VariantPolicy({"a": a, "b": other}, exp)
