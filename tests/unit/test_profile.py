"""The profile fold, checked by hand: weighting, decay, text, unknown items, attributes,
ordering rules, time travel, diff and summary, the config, the keyword cap, old snapshots.

The properties every fold must keep are tests/unit/test_profile_properties.py."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from portrait.config import DAY_SECONDS, ProfileConfig
from portrait.errors import InvalidField, MissingFeatures, SnapshotIncompatible
from portrait.events import (
    AttributesSet,
    ItemDismissed,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
)
from portrait.fold import fold, replay
from portrait.inspection import diff, summarize
from portrait.items import ItemIndex
from portrait.profile import ProfileState
from portrait.snapshot_codec import SNAPSHOT_FORMAT, state_from_bytes, state_to_bytes
from tests.unit.builders import (
    CONFIG,
    DIM,
    ITEMS,
    assert_same_profile,
    catalog,
    profile_of,
    recorded,
    retrained,
    text_features,
)

T0 = 1_500_000_000.0
SPACE_B = retrained(ITEMS, alpha=0.6, seed=11)


def test_single_view_adds_weighted_item_vector_and_tags() -> None:
    state = profile_of([ItemViewed("e1", "u", T0, "i4")])
    row = ITEMS.row("i4")
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), 0.2 * ITEMS.matrix[row], rtol=1e-6)
    assert state.tag_weights(CONFIG) == {t: pytest.approx(0.2) for t in ITEMS.tags(row)}
    assert state.counts == {"view": 1}
    assert state.last_seq == 1 and state.t_ref == T0


def test_decay_halves_after_one_half_life() -> None:
    old = ItemPurchased("e1", "u", T0, "i1")
    new = ItemViewed("e2", "u", T0 + CONFIG.short_half_life_s, "i2")
    state = profile_of([old, new])
    m = ITEMS.matrix
    expect_short = 2.0 * 0.5 * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    short = state.short_vector(CONFIG, ITEMS)
    np.testing.assert_allclose(short, expect_short, rtol=1e-6, atol=1e-7)
    long_decay = 2.0 ** (-1.0 / 90.0)
    expect_long = 2.0 * long_decay * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect_long, rtol=1e-6, atol=1e-7)


def test_low_rating_and_dismiss_push_away_and_exclude() -> None:
    state = profile_of(
        [ItemRated("e1", "u", T0, "i3", rating=1.0), ItemDismissed("e2", "u", T0, "i5")]
    )
    row3, row5 = ITEMS.row("i3"), ITEMS.row("i5")
    expect = -1.0 * ITEMS.matrix[row3] + -1.0 * ITEMS.matrix[row5]
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect, rtol=1e-6, atol=1e-7)
    assert state.excluded == {"i3", "i5"}
    assert all(w < 0 for w in state.tag_weights(CONFIG).values())


def test_text_events_add_text_vector_and_keywords() -> None:
    search = SearchPerformed("e1", "u", T0, query="gritty space western")
    state = profile_of([search])
    feats = text_features(search.query)
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), feats.vector, rtol=1e-6)
    assert set(state.keyword_weights(CONFIG)) == {"gritty", "space", "western"}


def test_review_with_rating_uses_rating_weight_for_item_and_text_for_keywords() -> None:
    review = ReviewWritten("e1", "u", T0, "i2", text="loved it", rating=5.0)
    state = profile_of([review])
    expect = 1.0 * ITEMS.matrix[ITEMS.row("i2")] + text_features("loved it").vector
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect, rtol=1e-6)


def test_missing_text_features_refused_before_any_change() -> None:
    state = ProfileState("u", ITEMS.text_dim)
    events = recorded([ItemViewed("e0", "u", T0, "i1"), SearchPerformed("e1", "u", T0, "q x")])
    with pytest.raises(MissingFeatures):
        fold(state, events, CONFIG, ITEMS, {})
    assert state.event_count == 0 and not state.counts


def test_unknown_items_are_counted_and_weighted_but_add_no_vector_until_they_appear() -> None:
    state = profile_of([ItemViewed("e1", "u", T0, "new-0")])
    assert state.counts == {"view": 1}
    assert not state.long_vector(CONFIG, ITEMS).any()
    assert state.recent[-1][2] == "new-0"
    assert state.item_weights_at(CONFIG) == {"new-0": (pytest.approx(0.2), pytest.approx(0.2))}
    later = retrained(ITEMS, alpha=0.0, seed=3, extra=2)  # the catalog now has new-0
    row = later.row("new-0")
    np.testing.assert_allclose(state.long_vector(CONFIG, later), 0.2 * later.matrix[row], rtol=1e-6)
    assert state.tag_weights(CONFIG) == {}  # tags are the catalog's at fold time


def test_text_vectors_are_composed_into_the_text_part_of_a_blended_space() -> None:
    review = ReviewWritten("e1", "u", T0, "i2", text="loved it", rating=5.0)
    state = profile_of([review])
    long = state.long_vector(CONFIG, SPACE_B)
    assert long.shape == (SPACE_B.dim,) and SPACE_B.text_dim == DIM < SPACE_B.dim
    expect = 1.0 * SPACE_B.matrix[SPACE_B.row("i2")].astype(np.float64)
    expect[:DIM] += text_features("loved it").vector  # [text, 0], as an item without collab
    np.testing.assert_allclose(long, expect, rtol=1e-6, atol=1e-7)


def test_a_space_with_another_text_width_is_refused() -> None:
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    other = ItemIndex(list(ITEMS.ids), ITEMS.matrix[:, :8], list(ITEMS.all_tags()), ITEMS.model_id)
    with pytest.raises(InvalidField) as err:
        state.long_vector(CONFIG, other)
    assert err.value.field == "items.text_dim"
    profile_of([ItemViewed("e1", "u", T0, "i1")]).long_vector(CONFIG, other)  # no text: any space


def test_text_vectors_of_another_width_are_refused_before_any_change() -> None:
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    before = state_to_bytes(state)
    wide = SearchPerformed("e2", "u", T0 + 1, query="western")
    texts = {"e2": text_features("western", dim=DIM + 1)}
    with pytest.raises(InvalidField):
        batch = recorded([ItemViewed("e3", "u", T0, "i1"), wide], start_seq=2)
        fold(state, batch, CONFIG, ITEMS, texts)
    assert state_to_bytes(state) == before


def test_composition_cache_follows_folds_and_item_spaces() -> None:
    items = catalog(n=120, seed=5)
    events = [ItemViewed(f"e{i}", "u", T0 + i, f"i{i}") for i in range(100)]
    log = recorded(events + [ItemPurchased("e100", "u", T0 + 100, "i3")])
    state = replay(log[:-1], CONFIG, items, user_id="u")
    first = state.long_vector(CONFIG, items)
    assert state.composed(items) is state.composed(items)  # cached (a 100-item profile)
    fold(state, log[-1:], CONFIG, items)  # a fold must drop it
    full = replay(log, CONFIG, items, user_id="u")
    np.testing.assert_allclose(state.long_vector(CONFIG, items), full.long_vector(CONFIG, items))
    assert not np.allclose(first, state.long_vector(CONFIG, items))
    other = retrained(items, alpha=0.5, seed=2)
    expect = replay(log, CONFIG, other, user_id="u").long_vector(CONFIG, other)
    np.testing.assert_allclose(state.long_vector(CONFIG, other), expect, rtol=1e-9)


def test_attributes_latest_by_event_time_wins_and_empty_clears() -> None:
    events = [
        AttributesSet("e2", "u", T0 + 10, {"region": "EU", "age_band": "25-34"}),
        AttributesSet("e1", "u", T0, {"region": "US"}),  # older, arrives later: loses
        AttributesSet("e3", "u", T0 + 20, {"age_band": ""}),
    ]
    assert profile_of(events).attribute_values() == {"region": "EU"}


def test_folding_refuses_other_users_and_out_of_order_seq() -> None:
    state = ProfileState("u", ITEMS.text_dim)
    with pytest.raises(InvalidField):
        fold(state, recorded([ItemViewed("e1", "someone-else", T0, "i1")]), CONFIG, ITEMS)
    evs = recorded([ItemViewed("e1", "u", T0, "i1"), ItemViewed("e2", "u", T0, "i2")])
    with pytest.raises(InvalidField):
        fold(state, [evs[1], evs[0]], CONFIG, ITEMS)


def test_already_folded_seqs_are_skipped() -> None:
    events = recorded([ItemViewed(f"e{i}", "u", T0 + i, f"i{i}") for i in range(5)])
    state = fold(ProfileState("u", ITEMS.text_dim), events[:3], CONFIG, ITEMS)
    fold(state, events, CONFIG, ITEMS)  # overlaps the first three
    assert state.event_count == 5
    assert_same_profile(state, replay(events, CONFIG, ITEMS, user_id="u"))


def test_time_travel_by_seq_and_time() -> None:
    events = [ItemViewed(f"e{i}", "u", T0 + i * DAY_SECONDS, f"i{i}") for i in range(10)]
    at_seq = profile_of(events, until_seq=4)
    assert at_seq.last_seq == 4 and at_seq.event_count == 4
    assert_same_profile(at_seq, profile_of(events[:4]))
    at_time = profile_of(events, until_time=T0 + 2.5 * DAY_SECONDS)
    assert at_time.event_count == 3
    assert_same_profile(at_time, profile_of(events[:3]))


def test_diff_reports_rising_and_falling_interests() -> None:
    item = next(i for i in ITEMS.ids if len(ITEMS.tags(ITEMS.row(i))) == 1)
    (tag,) = ITEMS.tags(ITEMS.row(item))
    events = [ItemPurchased("e1", "u", T0, item)]
    before = profile_of(events)
    events.append(ItemRated("e2", "u", T0 + 60, item, rating=0.5))
    after = profile_of(events)
    d = diff(before, after, CONFIG, items=ITEMS)
    assert [c.name for c in d.fell] == [tag]
    assert d.events_between == 1 and d.count_changes == {"rating": 1}
    # Same item, weaker: the direction holds and the magnitude shrinks.
    assert d.long_similarity == pytest.approx(1.0)
    norm = lambda state: summarize(state, CONFIG, items=ITEMS)["long_norm"]
    assert norm(after) < norm(before)
    assert d.to_dict()["fell"][0]["delta"] < 0


def test_summary_is_json_ready() -> None:
    import json

    events = [ItemViewed("e1", "u", T0, "i1"), SearchPerformed("e2", "u", T0 + 1, "noir detective")]
    doc = summarize(profile_of(events), CONFIG, items=ITEMS)
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


def test_keywords_are_capped_at_the_strongest() -> None:
    """Every search and review added its words for good: a long-lived user's keyword set
    grew with all the text they ever wrote."""
    config = ProfileConfig(max_keywords=3)
    words = [f"w{k:02d}" for k in range(40)]
    # "strong" is in every query, so it must survive every pruning.
    searches = [SearchPerformed(f"e{k}", "u", T0 + k, query=f"strong {words[k]}")
                for k in range(40)]
    texts = {e.event_id: text_features(e.query) for e in searches}
    state = replay(recorded(searches), config, ITEMS, texts, user_id="u")
    assert 3 <= len(state.keywords) <= 6
    assert "strong" in state.keywords
    assert max(state.keyword_weights(config), key=state.keyword_weights(config).get) == "strong"
    with pytest.raises(InvalidField, match="max_keywords"):
        ProfileConfig(max_keywords=0)


def test_snapshot_of_the_old_format_is_incompatible_and_garbage_is_invalid() -> None:
    # Format 1 held item-vector sums ("long"/"short"): they cannot become per-item weights.
    old = msgpack.packb(
        {
            "format": 1,
            "user_id": "u",
            "dim": DIM,
            "anchor": T0,
            "t_ref": T0,
            "long": np.zeros(DIM).tobytes(),
            "short": np.zeros(DIM).tobytes(),
            "tags": {},
            "keywords": {},
            "counts": {"view": 1},
            "recent": [],
            "excluded": [],
            "attributes": {},
            "last_seq": 1,
            "event_count": 1,
        },
        use_bin_type=True,
    )
    assert SNAPSHOT_FORMAT == 2
    with pytest.raises(SnapshotIncompatible, match="format 1"):
        state_from_bytes(old)
    with pytest.raises(InvalidField):
        state_from_bytes(b"\xc1 not msgpack")
    with pytest.raises(InvalidField):
        state_from_bytes(msgpack.packb({"user_id": "u"}))


def test_a_restored_snapshot_keeps_folding_new_items() -> None:
    events = [ItemViewed(f"e{i}", "u", T0 + i, f"i{i % 7}") for i in range(12)]
    head = state_from_bytes(state_to_bytes(profile_of(events[:6])))
    fold(head, recorded(events)[6:], CONFIG, ITEMS)
    assert_same_profile(head, profile_of(events))
