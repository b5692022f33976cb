"""Settings from PORTRAIT_* variables: defaults, errors naming the variable, A/B variants."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from portrait.config import ProfileConfig
from portrait.ranking import RankingConfig
from portrait.tuned_config import TunedConfig
from serve.settings import Settings, SettingsError


def test_defaults_bind_loopback_and_use_the_embedded_database() -> None:
    s = Settings.from_env({})
    assert s.host == "127.0.0.1" and s.database_url is None
    policy = s.variant_policy()
    assert policy.for_user("anyone").name == "default"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORTRAIT_PORT": "eighty"}, "PORTRAIT_PORT"),
        ({"PORTRAIT_PORT": "70000"}, "PORTRAIT_PORT"),
        ({"PORTRAIT_SHARDS": "0"}, "PORTRAIT_SHARDS"),
        ({"PORTRAIT_PROFILE_CONFIG": "/nonexistent.json"}, "PORTRAIT_PROFILE_CONFIG"),
        ({"PORTRAIT_ENCODER_DTYPE": "float16"}, "PORTRAIT_ENCODER_DTYPE"),
        (
            {"PORTRAIT_INGRESS_MIN_REPLICAS": "3", "PORTRAIT_INGRESS_MAX_REPLICAS": "2"},
            "PORTRAIT_INGRESS_MIN_REPLICAS",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env(env)
    assert variable in str(err.value)


def test_experiment_file_splits_users_between_configs(tmp_path) -> None:
    tuned = TunedConfig(ProfileConfig(short_half_life_days=0.5), RankingConfig(short_mix=0.9))
    (tmp_path / "tuned.json").write_text(json.dumps(tuned.to_document()))
    (tmp_path / "exp.json").write_text(
        json.dumps(
            {
                "name": "tuned-vs-default",
                "split": {"control": 50, "tuned": 50},
                "variants": {"control": None, "tuned": "tuned.json"},
            }
        )
    )
    policy = Settings.from_env({"PORTRAIT_EXPERIMENT": str(tmp_path / "exp.json")}).variant_policy()
    seen = Counter(policy.for_user(f"user-{i}").name for i in range(2000))
    assert abs(seen["control"] - 1000) < 120 and abs(seen["tuned"] - 1000) < 120
    assert policy.for_user("user-7") is policy.for_user("user-7")
    tuned_variant = policy.variants["tuned"]
    assert (
        tuned_variant.profile.short_half_life_days == 0.5 and tuned_variant.ranking.short_mix == 0.9
    )


def test_experiment_with_a_variant_lacking_a_config_is_refused(tmp_path) -> None:
    (tmp_path / "exp.json").write_text(
        json.dumps(
            {
                "name": "x",
                "split": {"a": 1, "b": 1},
                "variants": {"a": None},
            }
        )
    )
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PORTRAIT_EXPERIMENT": str(tmp_path / "exp.json")})
    assert "PORTRAIT_EXPERIMENT" in str(err.value) and "b" in str(err.value)


def test_the_shipped_tuned_config_loads_with_its_item_space() -> None:
    from storage.datasets.paths import repo_root

    path = repo_root() / "configs" / "tuned-movielens.json"
    policy = Settings.from_env({"PORTRAIT_PROFILE_CONFIG": str(path)}).variant_policy()
    shipped = json.loads(path.read_text())
    variant = policy.for_user("u")
    assert variant.profile == ProfileConfig.from_dict(shipped["profile"])
    assert variant.items.alpha == shipped["item_vectors"]["alpha"]


def test_no_config_means_the_shipped_default() -> None:
    from portrait.default_config import default_config

    variant = Settings.from_env({}).variant_policy().for_user("u")
    default = default_config()
    assert (variant.profile, variant.ranking, variant.items) == (
        default.profile,
        default.ranking,
        default.item_vectors,
    )


def test_a_config_file_without_a_version_is_refused_naming_the_variable(tmp_path) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"profile": {}, "ranking": {}}))
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"PORTRAIT_PROFILE_CONFIG": str(tmp_path / "old.json")})
    assert "PORTRAIT_PROFILE_CONFIG" in str(err.value) and "version" in str(err.value)
