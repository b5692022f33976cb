"""KeyBERT-style keywords and zero-shot tags, with the deterministic test encoder."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.errors import InvalidField
from portrait.interests import TagVocabulary, infer_tags, tag_prompt
from portrait.keywords import (
    TextFeatureBatch,
    candidate_phrases,
    select_keywords,
)
from tests.fakes import HashingEncoder


def test_candidates_skip_stop_words_and_rank_by_frequency() -> None:
    cands = candidate_phrases("The robots and the robots of the space opera")
    assert cands[0] == "robots"
    assert "space opera" in cands and "the" not in cands
    assert not any(c.startswith("and ") or c.endswith(" the") for c in cands)


def test_select_keywords_hand_case() -> None:
    text = np.array([1.0, 0.0, 0.0])
    cands = ["exact", "near-duplicate", "orthogonal", "opposite"]
    vecs = np.array([[1.0, 0, 0], [0.99, 0.141, 0], [0, 1.0, 0], [-1.0, 0, 0]])
    got = select_keywords(text, cands, vecs, k=3, diversity=0.0)
    assert [p for p, _ in got] == ["exact", "near-duplicate"]  # only positive relevance
    assert got[0][1] == pytest.approx(1.0)
    # With diversity the near-duplicate is penalised by its similarity to "exact".
    diverse = select_keywords(text, cands, vecs, k=1, diversity=0.5)
    assert [p for p, _ in diverse] == ["exact"]


def test_one_encoder_call_for_texts_and_candidates() -> None:
    enc = HashingEncoder(dim=64)
    batch = TextFeatureBatch(["gritty space western", "slow romantic drama"])
    feats = batch.assemble(enc.encode(batch.inputs), enc.model_id)
    assert len(enc.calls) == 1
    assert len(feats) == 2
    assert all(abs(np.linalg.norm(f.vector) - 1) < 1e-5 for f in feats)
    words = {k for k, _ in feats[0].keywords}
    assert words and words <= {"gritty", "space", "western", "gritty space", "space western"}


def test_batch_refuses_empty_text_and_wrong_row_count() -> None:
    with pytest.raises(InvalidField) as err:
        TextFeatureBatch(["ok", "  "])
    assert err.value.field == "texts[1]"
    batch = TextFeatureBatch(["a phrase"])
    with pytest.raises(InvalidField):
        batch.assemble(np.zeros((1, 4), dtype=np.float32), "m")


def test_zero_shot_tags_rank_the_closest_first() -> None:
    enc = HashingEncoder(dim=64)
    names = ["horror", "comedy", "western"]
    vocab = TagVocabulary.build(names, enc.encode([tag_prompt(n) for n in names]))
    profile_vec = enc.encode(["western items"])[0] * 3.0
    assert infer_tags(profile_vec, vocab, top=1)[0][0] == "western"
    assert infer_tags(np.zeros(64), vocab) == []
