"""The profile fold: weighting, decay, order independence, snapshots, time travel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portrait.config import DAY_SECONDS, ProfileConfig
from portrait.errors import InvalidField, MissingFeatures
from portrait.events import (
    AttributesSet,
    Event,
    ItemDismissed,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
    event_text,
)
from portrait.inspection import diff, summarize
from portrait.profile import ProfileState, fold, replay
from portrait.snapshot_codec import state_from_bytes, state_to_bytes
from tests.unit.builders import GENRES, catalog, recorded, text_features

CONFIG = ProfileConfig()
ITEMS = catalog()
T0 = 1_500_000_000.0


def texts_for(events: list[Event]):
    return {e.event_id: text_features(t) for e in events if (t := event_text(e)) is not None}


def run(events: list[Event], config: ProfileConfig = CONFIG, **kw) -> ProfileState:
    return replay(recorded(events), config, ITEMS, texts_for(events), user_id="u", **kw)


def assert_same_profile(a: ProfileState, b: ProfileState, config: ProfileConfig = CONFIG) -> None:
    np.testing.assert_allclose(a.long_vector(config), b.long_vector(config), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(a.short_vector(config), b.short_vector(config), atol=1e-6, rtol=1e-6)
    for name in ("tag_weights", "keyword_weights"):
        wa, wb = getattr(a, name)(config), getattr(b, name)(config)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert wa[k] == pytest.approx(wb[k], abs=1e-6, rel=1e-6), k
    assert a.counts == b.counts
    assert a.recent == b.recent
    assert a.excluded == b.excluded
    assert a.attribute_values() == b.attribute_values()
    assert a.t_ref == b.t_ref
    assert a.event_count == b.event_count


# -- hand-checked semantics ---------------------------------------------------------------


def test_single_view_adds_weighted_item_vector_and_tags() -> None:
    state = run([ItemViewed("e1", "u", T0, "i4")])
    row = ITEMS.row("i4")
    np.testing.assert_allclose(state.long_vector(CONFIG), 0.2 * ITEMS.matrix[row], rtol=1e-6)
    assert state.tag_weights(CONFIG) == {t: pytest.approx(0.2) for t in ITEMS.tags(row)}
    assert state.counts == {"view": 1}
    assert state.last_seq == 1 and state.t_ref == T0


def test_decay_halves_after_one_half_life() -> None:
    old = ItemPurchased("e1", "u", T0, "i1")
    new = ItemViewed("e2", "u", T0 + CONFIG.short_half_life_s, "i2")
    state = run([old, new])
    m = ITEMS.matrix
    expect_short = 2.0 * 0.5 * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    np.testing.assert_allclose(state.short_vector(CONFIG), expect_short, rtol=1e-6, atol=1e-7)
    long_decay = 2.0 ** (-1.0 / 90.0)
    expect_long = 2.0 * long_decay * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    np.testing.assert_allclose(state.long_vector(CONFIG), expect_long, rtol=1e-6, atol=1e-7)


def test_low_rating_and_dismiss_push_away_and_exclude() -> None:
    state = run([ItemRated("e1", "u", T0, "i3", rating=1.0), ItemDismissed("e2", "u", T0, "i5")])
    row3, row5 = ITEMS.row("i3"), ITEMS.row("i5")
    expect = -1.0 * ITEMS.matrix[row3] + -1.0 * ITEMS.matrix[row5]
    np.testing.assert_allclose(state.long_vector(CONFIG), expect, rtol=1e-6, atol=1e-7)
    assert state.excluded == {"i3", "i5"}
    assert all(w < 0 for w in state.tag_weights(CONFIG).values())


def test_text_events_add_text_vector_and_keywords() -> None:
    search = SearchPerformed("e1", "u", T0, query="gritty space western")
    state = run([search])
    feats = text_features(search.query)
    np.testing.assert_allclose(state.long_vector(CONFIG), feats.vector, rtol=1e-6)
    assert set(state.keyword_weights(CONFIG)) == {"gritty", "space", "western"}


def test_review_with_rating_uses_rating_weight_for_item_and_text_for_keywords() -> None:
    review = ReviewWritten("e1", "u", T0, "i2", text="loved it", rating=5.0)
    state = run([review])
    expect = 1.0 * ITEMS.matrix[ITEMS.row("i2")] + text_features("loved it").vector
    np.testing.assert_allclose(state.long_vector(CONFIG), expect, rtol=1e-6)


def test_missing_text_features_refused_before_any_change() -> None:
    state = ProfileState("u", ITEMS.dim)
    events = recorded([ItemViewed("e0", "u", T0, "i1"), SearchPerformed("e1", "u", T0, "q x")])
    with pytest.raises(MissingFeatures):
        fold(state, events, CONFIG, ITEMS, {})
    assert state.event_count == 0 and not state.counts


def test_unknown_items_are_counted_but_add_no_vector() -> None:
    state = run([ItemViewed("e1", "u", T0, "not-in-catalog")])
    assert state.counts == {"view": 1}
    assert not state.long_vector(CONFIG).any()
    assert state.recent[-1][2] == "not-in-catalog"


def test_attributes_latest_by_event_time_wins_and_empty_clears() -> None:
    events = [
        AttributesSet("e2", "u", T0 + 10, {"region": "EU", "age_band": "25-34"}),
        AttributesSet("e1", "u", T0, {"region": "US"}),  # older, arrives later: loses
        AttributesSet("e3", "u", T0 + 20, {"age_band": ""}),
    ]
    assert run(events).attribute_values() == {"region": "EU"}


def test_folding_refuses_other_users_and_out_of_order_seq() -> None:
    state = ProfileState("u", ITEMS.dim)
    with pytest.raises(InvalidField):
        fold(state, recorded([ItemViewed("e1", "someone-else", T0, "i1")]), CONFIG, ITEMS)
    evs = recorded([ItemViewed("e1", "u", T0, "i1"), ItemViewed("e2", "u", T0, "i2")])
    with pytest.raises(InvalidField):
        fold(state, [evs[1], evs[0]], CONFIG, ITEMS)


def test_already_folded_seqs_are_skipped() -> None:
    events = recorded([ItemViewed(f"e{i}", "u", T0 + i, f"i{i}") for i in range(5)])
    state = fold(ProfileState("u", ITEMS.dim), events[:3], CONFIG, ITEMS)
    fold(state, events, CONFIG, ITEMS)  # overlaps the first three
    assert state.event_count == 5
    assert_same_profile(state, replay(events, CONFIG, ITEMS, user_id="u"))


def test_time_travel_by_seq_and_time() -> None:
    events = [ItemViewed(f"e{i}", "u", T0 + i * DAY_SECONDS, f"i{i}") for i in range(10)]
    at_seq = run(events, until_seq=4)
    assert at_seq.last_seq == 4 and at_seq.event_count == 4
    assert_same_profile(at_seq, run(events[:4]))
    at_time = run(events, until_time=T0 + 2.5 * DAY_SECONDS)
    assert at_time.event_count == 3
    assert_same_profile(at_time, run(events[:3]))


def test_diff_reports_rising_and_falling_interests() -> None:
    item = next(i for i in ITEMS.ids if len(ITEMS.tags(ITEMS.row(i))) == 1)
    (tag,) = ITEMS.tags(ITEMS.row(item))
    events = [ItemPurchased("e1", "u", T0, item)]
    before = run(events)
    events.append(ItemRated("e2", "u", T0 + 60, item, rating=0.5))
    after = run(events)
    d = diff(before, after, CONFIG)
    assert [c.name for c in d.fell] == [tag]
    assert d.events_between == 1 and d.count_changes == {"rating": 1}
    # Same item, weaker: the direction holds and the magnitude shrinks.
    assert d.long_similarity == pytest.approx(1.0)
    assert summarize(after, CONFIG)["long_norm"] < summarize(before, CONFIG)["long_norm"]
    assert d.to_dict()["fell"][0]["delta"] < 0


def test_summary_is_json_ready() -> None:
    import json

    events = [ItemViewed("e1", "u", T0, "i1"), SearchPerformed("e2", "u", T0 + 1, "noir detective")]
    doc = summarize(run(events), CONFIG)
    json.dumps(doc)
    assert doc["counts"] == {"search": 1, "view": 1}
    assert doc["recent"][0]["item_id"] == "i1"


def test_config_round_trips_and_hash_is_stable() -> None:
    cfg = ProfileConfig(short_half_life_days=2.0)
    assert ProfileConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.config_hash() == ProfileConfig.from_dict(cfg.to_dict()).config_hash()
    assert cfg.config_hash() != CONFIG.config_hash()
    with pytest.raises(InvalidField):
        ProfileConfig(long_half_life_days=0)
    with pytest.raises(InvalidField):
        ProfileConfig.from_dict({"half_life": 3})


# -- properties -----------------------------------------------------------------------------

item_ids = st.sampled_from(list(ITEMS.ids) + ["unknown-1"])
times = st.floats(min_value=T0, max_value=T0 + 3 * 365 * DAY_SECONDS)  # crosses a rebase


@st.composite
def event_lists(draw) -> list[Event]:
    n = draw(st.integers(min_value=1, max_value=40))
    out: list[Event] = []
    for i in range(n):
        kind = draw(st.sampled_from(["view", "purchase", "rating", "dismiss", "review", "search", "attr"]))
        eid, t = f"e{i}", draw(times)
        if kind == "view":
            out.append(ItemViewed(eid, "u", t, draw(item_ids)))
        elif kind == "purchase":
            out.append(ItemPurchased(eid, "u", t, draw(item_ids)))
        elif kind == "rating":
            out.append(ItemRated(eid, "u", t, draw(item_ids), rating=draw(st.sampled_from([0.5, 2.0, 3.0, 4.5, 5.0]))))
        elif kind == "dismiss":
            out.append(ItemDismissed(eid, "u", t, draw(item_ids)))
        elif kind == "review":
            out.append(ReviewWritten(eid, "u", t, draw(item_ids), text=draw(st.sampled_from(["fun ride", "dull and slow", "tense horror"]))))
        elif kind == "search":
            out.append(SearchPerformed(eid, "u", t, query=draw(st.sampled_from(GENRES))))
        else:
            out.append(AttributesSet(eid, "u", t, {"region": draw(st.sampled_from(["EU", "US", ""]))}))
    return out


@settings(max_examples=150, deadline=None)
@given(events=event_lists(), data=st.data())
def test_any_arrival_order_gives_the_same_profile(events: list[Event], data) -> None:
    shuffled = data.draw(st.permutations(events))
    assert_same_profile(run(events), run(list(shuffled)))


@settings(max_examples=150, deadline=None)
@given(events=event_lists(), data=st.data())
def test_snapshot_plus_tail_equals_full_replay(events: list[Event], data) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    log = recorded(events)
    texts = texts_for(events)
    head = replay(log[:cut], CONFIG, ITEMS, texts, user_id="u")
    restored = state_from_bytes(state_to_bytes(head))
    from_snapshot = replay(log, CONFIG, ITEMS, texts, user_id="u", snapshot=restored)
    assert_same_profile(from_snapshot, replay(log, CONFIG, ITEMS, texts, user_id="u"))


@settings(max_examples=100, deadline=None)
@given(events=event_lists())
def test_one_at_a_time_equals_batch(events: list[Event]) -> None:
    log, texts = recorded(events), texts_for(events)
    state = ProfileState("u", ITEMS.dim)
    for rec in log:
        fold(state, [rec], CONFIG, ITEMS, texts)
    assert_same_profile(state, replay(log, CONFIG, ITEMS, texts, user_id="u"))
