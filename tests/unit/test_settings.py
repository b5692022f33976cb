"""The settings model: PORTRAIT_* variables (flat and nested names), one boolean syntax, errors
naming the variable, JSON documents read once, secrets kept out of copies, the README's table."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from ray import cloudpickle

from portrait.config import ProfileConfig
from portrait.ranking import RankingConfig
from portrait.tuned_config import TunedConfig
from serve.settings import Settings, SettingsError, load_settings
from serve.settings.doc import README, readme_table, table


def test_defaults_bind_loopback_and_use_the_embedded_database() -> None:
    s = load_settings({})
    assert s.api.host == "127.0.0.1" and s.storage.database_url is None
    policy = s.experiments.variant_policy()
    assert policy.for_user("anyone").name == "default"


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"PORTRAIT_PORT": "eighty"}, "PORTRAIT_PORT"),
        ({"PORTRAIT_PORT": "70000"}, "PORTRAIT_PORT"),
        ({"PORTRAIT_SHARDS": "0"}, "PORTRAIT_SHARDS"),
        ({"PORTRAIT_PROFILE_CONFIG": "/nonexistent.json"}, "PORTRAIT_PROFILE_CONFIG"),
        ({"PORTRAIT_ENCODER_DTYPE": "float16"}, "PORTRAIT_ENCODER_DTYPE"),
        ({"PORTRAIT_AUTH": "maybe"}, "PORTRAIT_AUTH"),
        ({"PORTRAIT_SUMMARIES": "sometimes"}, "PORTRAIT_SUMMARIES"),
        ({"PORTRAIT_SHARDS__MAX": "-1"}, "PORTRAIT_SHARDS_MAX"),
        ({"PORTRAIT_SHARDS_MIN": "4", "PORTRAIT_SHARDS_MAX": "2"}, "PORTRAIT_SHARDS_MAX"),
        ({"PORTRAIT_LOG_LEVEL": "loud"}, "PORTRAIT_LOG_LEVEL"),
        ({"PORTRAIT_INSPECTOR_SECURE_COOKIE": "yes"}, "PORTRAIT_INSPECTOR_SECURE_COOKIE"),
        ({"PORTRAIT_TOKEN_CACHE_S": "nan"}, "PORTRAIT_TOKEN_CACHE_S"),
        (
            {"PORTRAIT_INGRESS_MIN_REPLICAS": "3", "PORTRAIT_INGRESS_MAX_REPLICAS": "2"},
            "PORTRAIT_INGRESS_MIN_REPLICAS",
        ),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert str(err.value).startswith(f"{variable}")


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
    settings = load_settings({"PORTRAIT_EXPERIMENT": str(tmp_path / "exp.json")})
    policy = settings.experiments.variant_policy()
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
        load_settings({"PORTRAIT_EXPERIMENT": str(tmp_path / "exp.json")})
    assert "PORTRAIT_EXPERIMENT" in str(err.value) and "b" in str(err.value)


def test_the_shipped_tuned_config_loads_with_its_item_space() -> None:
    from storage.datasets.paths import repo_root

    path = repo_root() / "configs" / "tuned-movielens.json"
    policy = load_settings({"PORTRAIT_PROFILE_CONFIG": str(path)}).experiments.variant_policy()
    shipped = json.loads(path.read_text())
    variant = policy.for_user("u")
    assert variant.profile == ProfileConfig.from_dict(shipped["profile"])
    assert variant.items.alpha == shipped["item_vectors"]["alpha"]


def test_no_config_means_the_shipped_default() -> None:
    from portrait.default_config import default_config

    variant = load_settings({}).experiments.variant_policy().for_user("u")
    default = default_config()
    assert (variant.profile, variant.ranking, variant.items) == (
        default.profile,
        default.ranking,
        default.item_vectors,
    )


def test_a_config_file_without_a_version_is_refused_naming_the_variable(tmp_path) -> None:
    (tmp_path / "old.json").write_text(json.dumps({"profile": {}, "ranking": {}}))
    with pytest.raises(SettingsError) as err:
        load_settings({"PORTRAIT_PROFILE_CONFIG": str(tmp_path / "old.json")})
    assert "PORTRAIT_PROFILE_CONFIG" in str(err.value) and "version" in str(err.value)


def test_flat_names_map_onto_the_sections() -> None:
    s = load_settings({"PORTRAIT_SHARDS": "3", "PORTRAIT_SHARDS_MAX": "6",
                       "PORTRAIT_SHARD_TARGET_QUEUE": "8", "PORTRAIT_SNAPSHOT_EVERY": "7",
                       "PORTRAIT_RETRAIN_MAX_AGE_S": "60", "PORTRAIT_ENCODER_NUM_REPLICAS": "2",
                       "PORTRAIT_SUMMARIES_CACHE_SIZE": "5", "PORTRAIT_LOG_LEVEL": "info",
                       "PORTRAIT_DATA_DIR": " /srv/p "})
    assert (s.shards.count, s.shards.max, s.shards.target_queue) == (3, 6, 8)
    assert (s.users.snapshot_every, s.retrain.max_age_s) == (7, 60.0)
    assert (s.encoder.num_replicas, s.summaries.cache_size) == (2, 5)
    assert s.logging.level == "INFO" and str(s.storage.data_dir) == "/srv/p"
    assert s.encoder.cache_dir == "/srv/p/models"  # the encoder's cache follows the data dir
    assert s.users.host_settings().snapshot_every == 7
    scaling = s.shards.scaling()
    assert scaling is not None and scaling.max_shards == 6


def test_the_nested_spelling_works_too_and_wins() -> None:
    s = load_settings({"PORTRAIT_SHARDS__COUNT": "5", "PORTRAIT_API__PORT": "9000",
                       "PORTRAIT_PORT": "8001", "PORTRAIT_ENCODER__MAX_LENGTH": "128"})
    assert (s.shards.count, s.api.port, s.encoder.max_length) == (5, 9000, 128)


@pytest.mark.parametrize(("raw", "value"), [
    ("on", True), ("off", False), ("true", True), ("False", False), ("yes", True), ("no", False),
    ("1", True), ("0", False), (" ON ", True),
])
def test_one_boolean_syntax_for_every_switch(raw: str, value: bool) -> None:
    s = load_settings({"PORTRAIT_AUTH": raw, "PORTRAIT_PSEUDONYMIZE": raw,
                       "PORTRAIT_SUMMARIES": raw, "PORTRAIT_ENCODER_ENFORCE_EAGER": raw})
    assert s.security.auth is s.security.pseudonymize is s.summaries.enabled is value
    assert s.encoder.enforce_eager is value
    assert load_settings({"PORTRAIT_ENCODER_ENFORCE_EAGER": "auto"}).encoder.enforce_eager is None


def test_settings_in_code_take_flat_keywords_and_no_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PORTRAIT_SHARDS", "9")
    s = Settings(shards=2, snapshot_every=4, auth=False, summaries=True)
    assert (s.shards.count, s.users.snapshot_every, s.security.auth) == (2, 4, False)
    assert s.summaries.enabled
    with pytest.raises(SettingsError, match="^PORTRAIT_SHARDS:"):
        Settings(shards=0)
    with pytest.raises(SettingsError, match="^PORTRAIT_PORT:"):
        s.replace(api={"port": 0})
    assert s.replace(storage={"database_url": None}).users.snapshot_every == 4


def test_json_documents_are_read_once_at_load(tmp_path) -> None:
    path = tmp_path / "tuned.json"
    tuned = TunedConfig(ProfileConfig(short_half_life_days=0.5), RankingConfig(short_mix=0.9))
    path.write_text(json.dumps(tuned.to_document()))
    s = load_settings({"PORTRAIT_PROFILE_CONFIG": str(path)})
    path.unlink()  # a replica on another node has no such file: it gets the value
    policy = s.experiments.variant_policy()
    assert policy is s.experiments.variant_policy()
    assert policy.for_user("u").ranking.short_mix == 0.9
    copy = cloudpickle.loads(cloudpickle.dumps(s))  # as Ray ships it to an actor
    assert copy.experiments.variant_policy().for_user("u").ranking.short_mix == 0.9


def test_secrets_never_show_and_never_travel(monkeypatch: pytest.MonkeyPatch) -> None:
    key, master, password = "ab" * 32, "cd" * 32, "pw-s3cret"
    s = load_settings({"PORTRAIT_SECRET_KEY": key, "PORTRAIT_MASTER_KEY": master,
                       "PORTRAIT_DATABASE_PASSWORD": password})
    secrets = s.security.secrets
    assert secrets.secret_key is not None and secrets.secret_key.get_secret_value() == key
    for text in (repr(s), str(s), s.model_dump_json()):
        assert key not in text and master not in text and password not in text
    shipped = cloudpickle.dumps(s)
    assert all(v.encode() not in shipped for v in (key, master, password))
    # The receiving process reads its own environment when it unpickles them.
    monkeypatch.delenv("PORTRAIT_SECRET_KEY", raising=False)
    monkeypatch.setenv("PORTRAIT_MASTER_KEY", "ef" * 32)
    there = cloudpickle.loads(shipped).security.secrets
    assert there.secret_key is None
    assert there.master_key is not None and there.master_key.get_secret_value() == "ef" * 32


def test_the_readme_table_is_the_models() -> None:
    generated = table()
    assert readme_table(README.read_text()) == generated, (
        "README's settings table differs from the model: run "
        "`.venv/bin/python -m serve.settings.doc --write`")
    for name in ("PORTRAIT_SHARDS_MAX", "PORTRAIT_SUMMARIES_TIMEOUT_S", "PORTRAIT_MASTER_KEY",
                 "PORTRAIT_INSPECTOR_SECURE_COOKIE", "PORTRAIT_ENCODER_MODEL"):
        assert f"`{name}`" in generated


def test_the_ranker_section_defaults_are_the_domains() -> None:
    """One default per ranker setting: the section's fields start where RankerSettings does
    (a service left at its defaults trains what the evaluation measures)."""
    from portrait.learned_ranker import RankerSettings
    from serve.settings.sections import RankerSection

    section = RankerSection()
    trained = section.ranker_settings()
    assert trained is not None
    domain = RankerSettings()
    for name in ("candidates", "labels_per_user", "max_groups", "min_groups", "min_data_in_leaf"):
        assert getattr(trained, name) == getattr(domain, name), name
