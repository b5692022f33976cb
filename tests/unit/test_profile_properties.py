"""Properties of the profile fold over random event lists: arrival order, snapshot plus
tail, batching, the item space it was folded with, the snapshot codec."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from portrait.config import DAY_SECONDS, ProfileConfig
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
)
from portrait.fold import fold, replay
from portrait.profile import ProfileState
from portrait.snapshot_codec import state_from_bytes, state_to_bytes
from tests.unit.builders import (
    CONFIG,
    DIM,
    GENRES,
    ITEMS,
    assert_same_profile,
    profile_of,
    recorded,
    retrained,
    texts_for,
)

T0 = 1_500_000_000.0

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
    assert_same_profile(profile_of(events), profile_of(list(shuffled)))


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
    state = profile_of(events)
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
