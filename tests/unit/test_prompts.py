"""Role prefixes: the model's prompts in the settings, and which role each text gets on the
offline path (item texts are passages; reviews, searches and their keyword candidates are
queries). The service path is in tests/api/test_encoder_prompts.py."""

from __future__ import annotations

import numpy as np
import pytest

from encoding.settings import (
    DEFAULT_MODEL_ID,
    MODELS,
    MULTILINGUAL_MODEL,
    EncoderSettings,
)
from offline.vector_cache import EncoderProvider, cached_encode, text_event_features
from portrait.events import ReviewWritten, SearchPerformed
from portrait.prompts import NO_PROMPTS, TextPrompts, prompts_of
from serve.settings import load_settings
from tests.fakes import HashingEncoder

E5 = TextPrompts(query="query: ", passage="passage: ")


class PromptedEncoder(HashingEncoder):
    """A deterministic encoder whose model wants e5's prefixes."""

    prompts = E5


def test_prompts_prefix_by_role() -> None:
    assert E5.queries(["a", "b"]) == ["query: a", "query: b"]
    assert E5.passages(["a"]) == ["passage: a"]
    assert NO_PROMPTS.queries(["a"]) == ["a"] and NO_PROMPTS.passages(["a"]) == ["a"]
    assert prompts_of(PromptedEncoder()) == E5
    assert prompts_of(HashingEncoder()) == NO_PROMPTS  # no attribute: texts as given


def test_the_model_setting_chooses_id_and_prompts() -> None:
    default = EncoderSettings()
    assert default.model_id == DEFAULT_MODEL_ID and default.prompts == NO_PROMPTS
    e5 = load_settings({"PORTRAIT_ENCODER_MODEL": "multilingual-e5-small"}).encoder
    assert e5.model == MULTILINGUAL_MODEL
    assert e5.model_id == MODELS[MULTILINGUAL_MODEL].model_id != DEFAULT_MODEL_ID
    assert e5.prompts == E5
    # an explicit id or prefix wins over the model's
    custom = load_settings({"PORTRAIT_ENCODER_MODEL": "multilingual-e5-small",
                            "PORTRAIT_ENCODER_MODEL_ID": "acme/e5",
                            "PORTRAIT_ENCODER_QUERY_PREFIX": "q> "}).encoder
    assert custom.model_id == "acme/e5"
    assert custom.prompts == TextPrompts(query="q> ", passage="passage: ")
    assert EncoderSettings(passage_prefix="doc: ").prompts == TextPrompts(passage="doc: ")


def test_an_unknown_model_names_the_variable() -> None:
    with pytest.raises(ValueError, match="PORTRAIT_ENCODER_MODEL"):
        load_settings({"PORTRAIT_ENCODER_MODEL": "e5-large"})
    with pytest.raises(ValueError, match="model"):
        EncoderSettings(model="e5-large")


def test_converted_checkpoints_live_under_the_data_dir() -> None:
    s = load_settings({"PORTRAIT_DATA_DIR": "/srv/portrait"}).encoder
    assert s.cache_dir == "/srv/portrait/models"
    explicit = load_settings({"PORTRAIT_DATA_DIR": "/srv/portrait",
                              "PORTRAIT_ENCODER_CACHE_DIR": "/cache"}).encoder
    assert explicit.cache_dir == "/cache"
    assert str(EncoderSettings().resolved_cache_dir()) == ".portrait/models"


def test_provider_knows_the_prompts_without_starting_the_encoder() -> None:
    provider = EncoderProvider(settings=EncoderSettings(model=MULTILINGUAL_MODEL))
    assert provider.prompts == E5
    assert provider.describe()["class"] == "VllmEncoder (not started)"
    assert EncoderProvider(HashingEncoder()).prompts == NO_PROMPTS


def test_offline_text_events_are_encoded_as_queries() -> None:
    enc = PromptedEncoder()
    events = [
        SearchPerformed("s1", "u", 1.0, query="space opera with rebels"),
        ReviewWritten("r1", "u", 2.0, item_id="i1", text="a slow romantic drama", rating=4.0),
    ]
    feats, _ = text_event_features(events, EncoderProvider(enc), None, "t")
    sent = enc.calls[0]
    assert sent[:2] == ["query: space opera with rebels", "query: a slow romantic drama"]
    assert sent[2:] and all(t.startswith("query: ") for t in sent)  # keyword candidates
    # the vector is the prefixed text's, not the bare text's
    np.testing.assert_allclose(feats["s1"].vector, enc.encode(["query: space opera with "
                                                                "rebels"])[0])


def test_the_vector_cache_covers_the_prefix(tmp_path) -> None:
    # Same texts, same model id, other prompts: a miss, not vectors of the other prompts.
    texts = ["Toy Story (1995)", "Heat (1995)"]
    plain = HashingEncoder(model_id="m")
    prompted = PromptedEncoder(model_id="m")
    _, first = cached_encode(EncoderProvider(plain).prompts.passages(texts),
                             EncoderProvider(plain), tmp_path, "x", progress=False)
    vectors, second = cached_encode(EncoderProvider(prompted).prompts.passages(texts),
                                    EncoderProvider(prompted), tmp_path, "x", progress=False)
    assert (first["cache"], second["cache"]) == ("miss", "miss")
    assert prompted.calls == [["passage: Toy Story (1995)", "passage: Heat (1995)"]]
    np.testing.assert_allclose(vectors, prompted.encode(["passage: Toy Story (1995)",
                                                         "passage: Heat (1995)"]))
