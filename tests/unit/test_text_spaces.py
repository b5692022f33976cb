"""No mixed text spaces: a profile's text part belongs to one encoder, and nothing of another
encoder is ever added to it or composed with it."""

from __future__ import annotations

import dataclasses

import msgpack
import numpy as np
import pytest

from portrait.errors import MixedTextSpaces
from portrait.events import Event, ItemViewed, ReviewWritten, SearchPerformed
from portrait.fold import fold
from portrait.items import ItemIndex
from portrait.ports import TextFeatures
from portrait.snapshot_codec import state_from_bytes, state_to_bytes
from tests.unit.builders import CONFIG, ITEMS, MODEL, profile_of, recorded, text_features

T0 = 1_500_000_000.0


def of_model(features: TextFeatures, model: str) -> TextFeatures:
    return dataclasses.replace(features, model_id=model)


def test_the_first_text_fold_names_the_profiles_encoder() -> None:
    assert profile_of([ItemViewed("e1", "u", T0, "i1")]).text_model is None
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    assert state.text_model == MODEL
    assert state.copy().text_model == MODEL


def test_features_of_another_encoder_are_refused_before_any_change() -> None:
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    before = state_to_bytes(state)
    later = SearchPerformed("e2", "u", T0 + 1, query="western")
    texts = {"e2": of_model(text_features("western"), "other-encoder")}
    with pytest.raises(MixedTextSpaces) as err:
        fold(state, recorded([ItemViewed("e3", "u", T0, "i1"), later], start_seq=2),
             CONFIG, ITEMS, texts)
    assert (err.value.have, err.value.got) == (MODEL, "other-encoder")
    assert state_to_bytes(state) == before


def test_one_batch_of_two_encoders_is_refused() -> None:
    events = [SearchPerformed("e1", "u", T0, query="noir"),
              ReviewWritten("e2", "u", T0 + 1, "i2", text="loved it", rating=5.0)]
    texts = {"e1": text_features("noir"),
             "e2": of_model(text_features("loved it"), "other-encoder")}
    state = profile_of([ItemViewed("e0", "u", T0, "i1")])
    with pytest.raises(MixedTextSpaces):
        fold(state, recorded(events, start_seq=2), CONFIG, ITEMS, texts)
    assert state.text_acc is None and state.text_model is None


def test_a_profile_is_never_ranked_in_another_encoders_item_space() -> None:
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    other = ItemIndex(list(ITEMS.ids), ITEMS.matrix, list(ITEMS.all_tags()), "other-encoder")
    with pytest.raises(MixedTextSpaces):
        state.long_vector(CONFIG, other)
    # Without text, a profile is only item weights: valid in any encoder's space.
    profile_of([ItemViewed("e1", "u", T0, "i1")]).long_vector(CONFIG, other)


def test_the_snapshot_keeps_the_encoder_and_an_old_one_reads_as_unknown() -> None:
    state = profile_of([SearchPerformed("e1", "u", T0, query="noir")])
    assert state_from_bytes(state_to_bytes(state)).text_model == MODEL
    doc = msgpack.unpackb(state_to_bytes(state), raw=False)
    del doc["text_model"]  # written before the encoder was recorded
    legacy = state_from_bytes(msgpack.packb(doc, use_bin_type=True))
    assert legacy.text_model is None and legacy.text_acc is not None
    # Unknown is not trusted: neither read in a space nor folded into.
    with pytest.raises(MixedTextSpaces):
        legacy.long_vector(CONFIG, ITEMS)
    with pytest.raises(MixedTextSpaces):
        fold(legacy, recorded([SearchPerformed("e2", "u", T0 + 1, query="x")], start_seq=2),
             CONFIG, ITEMS, {"e2": text_features("x")})


def test_a_text_fold_then_a_switch_reads_the_new_space_after_a_refold() -> None:
    """What a shard does after a switch: the text part is folded again from the log under
    the new encoder, and the profile reads the new space."""
    events: list[Event] = [SearchPerformed("e1", "u", T0, query="noir")]
    new_items = ItemIndex(list(ITEMS.ids), ITEMS.matrix[:, ::-1], list(ITEMS.all_tags()), "v2")
    refolded = fold(profile_of([]), recorded(events), CONFIG, new_items,
                    {"e1": of_model(text_features("noir"), "v2")})
    assert refolded.text_model == "v2"
    assert np.isfinite(refolded.long_vector(CONFIG, new_items)).all()
