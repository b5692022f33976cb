"""The tuned-config document: one reader and writer, a version check, errors naming the key."""

from __future__ import annotations

import json

import pytest

from portrait.config import ProfileConfig
from portrait.errors import InvalidField, InvalidInput, MissingField
from portrait.item_space import CollabSettings
from portrait.ranking import RankingConfig
from portrait.tuned_config import DOCUMENT_VERSION, ItemVectorSettings, TunedConfig
from storage.datasets.paths import repo_root

SHIPPED = repo_root() / "configs" / "tuned-movielens.json"


def tuned() -> TunedConfig:
    return TunedConfig(
        ProfileConfig(short_half_life_days=0.5, event_weights={"view": 0.3, "purchase": 2.0}),
        RankingConfig(short_mix=0.9, popularity_weight=1.5),
        ItemVectorSettings(0.25, CollabSettings(dim=64, min_count=3), "model-x"),
        {"created": "2026-01-01T00:00:00+00:00", "dataset": "d",
         "validation_metrics": {"NDCG@10": 0.1}, "search": {"trials": 3}},
    )


def test_a_document_round_trips() -> None:
    config = tuned()
    doc = json.loads(json.dumps(config.to_document()))
    assert TunedConfig.from_document(doc) == config
    assert TunedConfig.from_document(doc).to_document() == doc


def test_the_document_layout_puts_when_and_what_first_and_metadata_last() -> None:
    doc = tuned().to_document()
    assert list(doc) == [
        "version", "created", "dataset", "profile", "profile_config_hash", "ranking",
        "item_vectors", "validation_metrics", "search",
    ]
    assert doc["version"] == DOCUMENT_VERSION
    assert doc["profile_config_hash"] == tuned().profile.config_hash()
    assert doc["item_vectors"]["collaborative"]["dim"] == 64


def test_the_shipped_movielens_config_loads_and_writes_back_unchanged() -> None:
    doc = json.loads(SHIPPED.read_text())
    config = TunedConfig.from_document(doc)
    assert config.profile == ProfileConfig.from_dict(doc["profile"])
    assert config.item_vectors.alpha == doc["item_vectors"]["alpha"]
    collab = doc["item_vectors"]["collaborative"]
    assert config.item_vectors.collaborative == CollabSettings(**collab)
    assert config.to_document() == doc


def test_missing_parts_take_the_defaults() -> None:
    config = TunedConfig.from_document({"version": 1, "profile": {}})
    assert config == TunedConfig()
    assert config.item_vectors.collaborative is None and config.item_vectors.alpha == 0.0


@pytest.mark.parametrize(
    ("doc", "error", "field"),
    [
        ({"profile": {}}, MissingField, "version"),
        ({"version": 0, "profile": {}}, InvalidField, "version"),
        ({"version": DOCUMENT_VERSION + 1, "profile": {}}, InvalidField, "version"),
        ({"version": "1", "profile": {}}, InvalidField, "version"),
        ({"version": True, "profile": {}}, InvalidField, "version"),
        ({"version": 1}, MissingField, "profile"),
        ({"version": 1, "profile": []}, InvalidField, "profile"),
        ({"version": 1, "profile": {"colour": 1}}, InvalidField, "profile.colour"),
        ({"version": 1, "profile": {"long_half_life_days": -1}}, InvalidField,
         "profile.long_half_life_days"),
        ({"version": 1, "profile": {}, "ranking": {"boost": 1}}, InvalidField, "ranking.boost"),
        ({"version": 1, "profile": {}, "ranking": {"short_mix": "high"}}, InvalidField,
         "ranking.short_mix"),
        ({"version": 1, "profile": {}, "ranking": {"short_mix": 2.0}}, InvalidField,
         "ranking.short_mix"),
        ({"version": 1, "profile": {}, "item_vectors": {"alpha": 1.5}}, InvalidField,
         "item_vectors.alpha"),
        ({"version": 1, "profile": {}, "item_vectors": {"alpha": "all"}}, InvalidField,
         "item_vectors.alpha"),
        ({"version": 1, "profile": {}, "item_vectors": {"collaborative": {"dims": 8}}},
         InvalidField, "item_vectors.collaborative.dims"),
        ({"version": 1, "profile": {}, "item_vectors": {"collaborative": {"dim": 8.5}}},
         InvalidField, "item_vectors.collaborative.dim"),
        ([1, 2], InvalidField, "document"),
    ],
)
def test_bad_documents_are_refused_naming_the_key(doc: object, error: type, field: str) -> None:
    with pytest.raises(error) as err:
        TunedConfig.from_document(doc)
    assert isinstance(err.value, InvalidInput)
    assert err.value.field == field


def test_metadata_may_not_shadow_the_typed_parts() -> None:
    with pytest.raises(InvalidField) as err:
        TunedConfig(metadata={"profile": {}})
    assert err.value.field == "metadata.profile"
