"""The profile fold: weighting, decay, order independence, basis independence, snapshots,
time travel."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portrait.collaborative import combine
from portrait.config import DAY_SECONDS, ProfileConfig
from portrait.errors import InvalidField, MissingFeatures, SnapshotIncompatible
from portrait.events import (
    AttributesSet,
    Event,
    ItemDismissed,
    ItemEvent,
    ItemPurchased,
    ItemRated,
    ItemViewed,
    ReviewWritten,
    SearchPerformed,
    event_text,
)
from portrait.fold import fold, replay
from portrait.inspection import diff, summarize
from portrait.items import ItemIndex, l2_normalise
from portrait.profile import ProfileState
from portrait.snapshot_codec import SNAPSHOT_FORMAT, state_from_bytes, state_to_bytes
from tests.unit.builders import DIM, GENRES, catalog, recorded, text_features

CONFIG = ProfileConfig()
ITEMS = catalog()
T0 = 1_500_000_000.0


def retrained(items: ItemIndex, alpha: float, seed: int, extra: int = 0) -> ItemIndex:
    """Another item space over ``items``' text vectors: text blended with fresh random
    "collaborative" vectors (a third of the items without one), and ``extra`` new items
    ``new-0``... appended (tagged like the first items)."""
    rng = np.random.default_rng(seed)
    n = len(items) + extra
    text = np.vstack([items.matrix, l2_normalise(rng.normal(size=(extra, items.dim)))])
    collab = l2_normalise(rng.normal(size=(n, 5)))
    collab[rng.random(n) < 1 / 3] = 0.0
    ids = list(items.ids) + [f"new-{k}" for k in range(extra)]
    tags = list(items.all_tags()) + [items.tags(k % len(items)) for k in range(extra)]
    return ItemIndex(
        ids, combine(text, collab, alpha), tags, text_dim=items.dim, space_version=f"s{seed}"
    )


SPACE_B = retrained(ITEMS, alpha=0.6, seed=11)


def texts_for(events: list[Event]):
    return {e.event_id: text_features(t) for e in events if (t := event_text(e)) is not None}


def run(events: list[Event], config: ProfileConfig = CONFIG, **kw) -> ProfileState:
    return replay(recorded(events), config, ITEMS, texts_for(events), user_id="u", **kw)


def assert_same_profile(
    a: ProfileState, b: ProfileState, config: ProfileConfig = CONFIG, items: ItemIndex = ITEMS
) -> None:
    for name in ("long_vector", "short_vector"):
        np.testing.assert_allclose(
            getattr(a, name)(config, items), getattr(b, name)(config, items), atol=1e-6, rtol=1e-6
        )
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
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), 0.2 * ITEMS.matrix[row], rtol=1e-6)
    assert state.tag_weights(CONFIG) == {t: pytest.approx(0.2) for t in ITEMS.tags(row)}
    assert state.counts == {"view": 1}
    assert state.last_seq == 1 and state.t_ref == T0


def test_decay_halves_after_one_half_life() -> None:
    old = ItemPurchased("e1", "u", T0, "i1")
    new = ItemViewed("e2", "u", T0 + CONFIG.short_half_life_s, "i2")
    state = run([old, new])
    m = ITEMS.matrix
    expect_short = 2.0 * 0.5 * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    short = state.short_vector(CONFIG, ITEMS)
    np.testing.assert_allclose(short, expect_short, rtol=1e-6, atol=1e-7)
    long_decay = 2.0 ** (-1.0 / 90.0)
    expect_long = 2.0 * long_decay * m[ITEMS.row("i1")] + 0.2 * m[ITEMS.row("i2")]
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect_long, rtol=1e-6, atol=1e-7)


def test_low_rating_and_dismiss_push_away_and_exclude() -> None:
    state = run([ItemRated("e1", "u", T0, "i3", rating=1.0), ItemDismissed("e2", "u", T0, "i5")])
    row3, row5 = ITEMS.row("i3"), ITEMS.row("i5")
    expect = -1.0 * ITEMS.matrix[row3] + -1.0 * ITEMS.matrix[row5]
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect, rtol=1e-6, atol=1e-7)
    assert state.excluded == {"i3", "i5"}
    assert all(w < 0 for w in state.tag_weights(CONFIG).values())


def test_text_events_add_text_vector_and_keywords() -> None:
    search = SearchPerformed("e1", "u", T0, query="gritty space western")
    state = run([search])
    feats = text_features(search.query)
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), feats.vector, rtol=1e-6)
    assert set(state.keyword_weights(CONFIG)) == {"gritty", "space", "western"}


def test_review_with_rating_uses_rating_weight_for_item_and_text_for_keywords() -> None:
    review = ReviewWritten("e1", "u", T0, "i2", text="loved it", rating=5.0)
    state = run([review])
    expect = 1.0 * ITEMS.matrix[ITEMS.row("i2")] + text_features("loved it").vector
    np.testing.assert_allclose(state.long_vector(CONFIG, ITEMS), expect, rtol=1e-6)


def test_missing_text_features_refused_before_any_change() -> None:
    state = ProfileState("u", ITEMS.text_dim)
    events = recorded([ItemViewed("e0", "u", T0, "i1"), SearchPerformed("e1", "u", T0, "q x")])
    with pytest.raises(MissingFeatures):
        fold(state, events, CONFIG, ITEMS, {})
    assert state.event_count == 0 and not state.counts


def test_unknown_items_are_counted_and_weighted_but_add_no_vector_until_they_appear() -> None:
    state = run([ItemViewed("e1", "u", T0, "new-0")])
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
    state = run([review])
    long = state.long_vector(CONFIG, SPACE_B)
    assert long.shape == (SPACE_B.dim,) and SPACE_B.text_dim == DIM < SPACE_B.dim
    expect = 1.0 * SPACE_B.matrix[SPACE_B.row("i2")].astype(np.float64)
    expect[:DIM] += text_features("loved it").vector  # [text, 0], as an item without collab
    np.testing.assert_allclose(long, expect, rtol=1e-6, atol=1e-7)


def test_a_space_with_another_text_width_is_refused() -> None:
    state = run([SearchPerformed("e1", "u", T0, query="noir")])
    other = ItemIndex(list(ITEMS.ids), ITEMS.matrix[:, :8], list(ITEMS.all_tags()))
    with pytest.raises(InvalidField) as err:
        state.long_vector(CONFIG, other)
    assert err.value.field == "items.text_dim"
    run([ItemViewed("e1", "u", T0, "i1")]).long_vector(CONFIG, other)  # no text: any space


def test_text_vectors_of_another_width_are_refused_before_any_change() -> None:
    state = run([SearchPerformed("e1", "u", T0, query="noir")])
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
    assert run(events).attribute_values() == {"region": "EU"}


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
    doc = summarize(run(events), CONFIG, items=ITEMS)
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

item_ids = st.sampled_from(list(ITEMS.ids) + ["unknown-1", "new-0", "new-1"])
times = st.floats(min_value=T0, max_value=T0 + 3 * 365 * DAY_SECONDS)  # crosses a rebase


@st.composite
def event_lists(draw) -> list[Event]:
    n = draw(st.integers(min_value=1, max_value=40))
    out: list[Event] = []
    for i in range(n):
        kinds = ["view", "purchase", "rating", "dismiss", "review", "search", "attr"]
        kind = draw(st.sampled_from(kinds))
        eid, t = f"e{i}", draw(times)
        if kind == "view":
            out.append(ItemViewed(eid, "u", t, draw(item_ids)))
        elif kind == "purchase":
            out.append(ItemPurchased(eid, "u", t, draw(item_ids)))
        elif kind == "rating":
            out.append(
                ItemRated(
                    eid,
                    "u",
                    t,
                    draw(item_ids),
                    rating=draw(st.sampled_from([0.5, 2.0, 3.0, 4.5, 5.0])),
                )
            )
        elif kind == "dismiss":
            out.append(ItemDismissed(eid, "u", t, draw(item_ids)))
        elif kind == "review":
            out.append(
                ReviewWritten(
                    eid,
                    "u",
                    t,
                    draw(item_ids),
                    text=draw(st.sampled_from(["fun ride", "dull and slow", "tense horror"])),
                )
            )
        elif kind == "search":
            out.append(SearchPerformed(eid, "u", t, query=draw(st.sampled_from(GENRES))))
        else:
            out.append(
                AttributesSet(eid, "u", t, {"region": draw(st.sampled_from(["EU", "US", ""]))})
            )
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


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), data=st.data())
def test_a_capped_profile_still_equals_its_replay_however_it_was_batched(
    events: list[Event], data
) -> None:
    config = ProfileConfig(max_keywords=1)  # pruned all the time
    log, texts = recorded(events), texts_for(events)
    cut = data.draw(st.integers(min_value=0, max_value=len(events)))
    state = replay(log[:cut], config, ITEMS, texts, user_id="u")
    state = state_from_bytes(state_to_bytes(state))
    for rec in log[cut:]:
        fold(state, [rec], config, ITEMS, texts)
    full = replay(log, config, ITEMS, texts, user_id="u")
    assert_same_profile(state, full)
    assert len(full.keywords) <= 2


@settings(max_examples=100, deadline=None)
@given(events=event_lists())
def test_one_at_a_time_equals_batch(events: list[Event]) -> None:
    log, texts = recorded(events), texts_for(events)
    state = ProfileState("u", ITEMS.text_dim)
    for rec in log:
        fold(state, [rec], CONFIG, ITEMS, texts)
    assert_same_profile(state, replay(log, CONFIG, ITEMS, texts, user_id="u"))


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), alpha=st.floats(min_value=0.0, max_value=1.0), seed=st.integers(0, 9))
def test_profile_is_independent_of_the_item_space_it_was_folded_with(
    events: list[Event], alpha: float, seed: int
) -> None:
    # A retrain: same items and tags, other vectors. Folding never reads vectors, so the
    # profile folded with A and read in B is the profile folded with B and read in B.
    space_b = retrained(ITEMS, alpha, seed)
    log, texts = recorded(events), texts_for(events)
    with_a = replay(log, CONFIG, ITEMS, texts, user_id="u")
    with_b = replay(log, CONFIG, space_b, texts, user_id="u")
    assert_same_profile(with_a, with_b, items=space_b)
    assert_same_profile(with_a, with_b, items=ITEMS)


@settings(max_examples=100, deadline=None)
@given(events=event_lists(), data=st.data())
def test_items_unknown_at_fold_time_count_once_the_space_has_them(
    events: list[Event], data
) -> None:
    later = retrained(ITEMS, data.draw(st.floats(0.0, 1.0)), seed=4, extra=2)  # adds new-0, new-1
    log, texts = recorded(events), texts_for(events)
    cut = data.draw(st.integers(min_value=0, max_value=len(log)))
    # Folded while the catalog lacked the new items, then the rest after they arrived.
    early = replay(log[:cut], CONFIG, ITEMS, texts, user_id="u")
    state = fold(early, log[cut:], CONFIG, later, texts)
    reference = replay(log, CONFIG, later, texts, user_id="u")
    for name in ("long_vector", "short_vector"):
        np.testing.assert_allclose(
            getattr(state, name)(CONFIG, later),
            getattr(reference, name)(CONFIG, later),
            atol=1e-6,
            rtol=1e-6,
        )
    # Tags are the catalog's at fold time: only the new items' events folded early lack them.
    if not any(isinstance(e, ItemEvent) and e.item_id.startswith("new-") for e in events[:cut]):
        assert state.tag_weights(CONFIG).keys() == reference.tag_weights(CONFIG).keys()


@settings(max_examples=100, deadline=None)
@given(events=event_lists())
def test_snapshot_round_trip_is_bit_exact(events: list[Event]) -> None:
    state = run(events)
    data = state_to_bytes(state)
    restored = state_from_bytes(data)
    assert state_to_bytes(restored) == data
    n = len(state.item_slots)
    assert restored.item_slots == state.item_slots
    assert np.array_equal(restored.item_weights[:, :n], state.item_weights[:, :n])
    assert (restored.text_acc is None) == (state.text_acc is None)
    if state.text_acc is not None:
        assert np.array_equal(restored.text_acc, state.text_acc)
        assert restored.text_dim == state.text_dim == DIM


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
    head = state_from_bytes(state_to_bytes(run(events[:6])))
    fold(head, recorded(events)[6:], CONFIG, ITEMS)
    assert_same_profile(head, run(events))
