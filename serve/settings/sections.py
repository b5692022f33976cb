"""The sections of Portrait's settings model, each a frozen, validated value.

Every field is one ``PORTRAIT_*`` variable: ``PORTRAIT_<NAME>`` where the field names it in
``json_schema_extra={"env": NAME}``, else the section's prefix plus the field's name in upper
case (:func:`serve.settings.source.variables`). Each field's description is the README's
settings table (generated, ``python -m serve.settings.doc``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from actors.host import HostSettings
from portrait.default_config import default_config
from portrait.errors import PortraitError
from portrait.experiments import Experiment
from portrait.item_space import CollabSettings
from portrait.scaling import ShardScaling
from portrait.tuned_config import TunedConfig
from portrait.variants import Variant, VariantPolicy
from storage.secrets import ProcessSecrets

if TYPE_CHECKING:
    from portrait.learned_ranker import RankerSettings

PREFIX = "PORTRAIT_"
MIB = 1024 * 1024
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOST = HostSettings()


def env(name: str) -> Any:
    """``json_schema_extra`` naming a field's variable (``PORTRAIT_`` + ``name``)."""
    return {"env": name}


class Section(BaseModel):
    """Frozen, no unknown fields, no NaN or infinity."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class StorageSettings(Section):
    """Where the data live."""

    database_url: str | None = Field(None, json_schema_extra=env("DATABASE_URL"), description=(
        "`postgresql://user@host:5432/db`; unset: the embedded Postgres under the data dir; "
        "`memory://NAME` only for the in-process system (tests)"))
    data_dir: Path = Field(Path(".portrait"), json_schema_extra=env("DATA_DIR"), description=(
        "embedded Postgres data, keys and caches"))
    datasets_dir: Path | None = Field(None, json_schema_extra=env("DATASETS_DIR"), description=(
        "where non-bundled evaluation data sets live; unset: `../shared/datasets` beside the "
        "checkout"))


class ShardsSettings(Section):
    """The ProfileShard fleet and its autoscaler."""

    count: int = Field(2, ge=1, le=1024, json_schema_extra=env("SHARDS"), description=(
        "ProfileShard actors at the first start (then `POST /v1/shards` or the autoscaler; a "
        "redeploy keeps the current count)"))
    min: int = Field(1, ge=1, le=1024, json_schema_extra=env("SHARDS_MIN"), description=(
        "lower bound of the shard autoscaler (see \"Elastic shards\")"))
    max: int = Field(0, ge=0, le=1024, json_schema_extra=env("SHARDS_MAX"), description=(
        "upper bound of the shard autoscaler; 0: no autoscaling"))
    target_active_users: int = Field(50_000, ge=1, json_schema_extra=env(
        "SHARD_TARGET_ACTIVE_USERS"), description="users in memory per shard the autoscaler "
        "aims at")
    target_queue: int = Field(64, ge=1, json_schema_extra=env("SHARD_TARGET_QUEUE"), description=(
        "waiting work per shard the autoscaler aims at: events queued for their commit plus "
        "calls in flight"))
    call_timeout_s: float = Field(60.0, gt=0, json_schema_extra=env("SHARD_CALL_TIMEOUT_S"),
                                  description="deadline of each ingress -> shard call (then 503 "
                                  "with `Retry-After`)")

    @model_validator(mode="after")
    def _bounds(self) -> ShardsSettings:
        if self.max and self.min > self.max:
            raise ValueError(f"{PREFIX}SHARDS_MAX: must be 0 (no autoscaling) or at least "
                             f"{PREFIX}SHARDS_MIN ({self.min})")
        return self

    def scaling(self) -> ShardScaling | None:
        """The autoscaler's policy; None (a fixed count, resized only on request) unless
        ``PORTRAIT_SHARDS_MAX`` is set."""
        if self.max <= 0:
            return None
        return ShardScaling(self.min, self.max, self.target_active_users, self.target_queue)


class UsersSettings(Section):
    """The user-actor policy of each shard (:class:`actors.host.HostSettings` holds the
    defaults)."""

    snapshot_every: int = Field(_HOST.snapshot_every, ge=1, json_schema_extra=env(
        "SNAPSHOT_EVERY"), description="a user's snapshot is written every this many events")
    snapshot_min_tail: int = Field(_HOST.snapshot_min_tail, ge=1, json_schema_extra=env(
        "SNAPSHOT_MIN_TAIL"), description="a user leaving memory is snapshotted only this many "
        "events past their last snapshot; shorter tails replay from the log")
    idle_timeout_s: float = Field(_HOST.idle_timeout_s, gt=0, json_schema_extra=env(
        "IDLE_TIMEOUT_S"), description="a user idle this long leaves memory")
    memory_budget_mb: int = Field(_HOST.memory_budget_bytes // MIB, ge=1, json_schema_extra=env(
        "MEMORY_BUDGET_MB"), description="users' memory per shard before the least recent leave")

    def host_settings(self) -> HostSettings:
        """The policy as the user host takes it."""
        return HostSettings(snapshot_every=self.snapshot_every,
                            snapshot_min_tail=self.snapshot_min_tail,
                            idle_timeout_s=self.idle_timeout_s,
                            memory_budget_bytes=self.memory_budget_mb * MIB)


class ApiSettings(Section):
    """The HTTP ingress, its limits, and where Ray and Serve run."""

    host: str = Field("127.0.0.1", json_schema_extra=env("HOST"), description=(
        "where the HTTP API listens (loopback only by default)"))
    port: int = Field(8000, ge=1, le=65535, json_schema_extra=env("PORT"), description=(
        "the HTTP API's port"))
    max_batch_events: int = Field(1000, ge=1, le=100_000, json_schema_extra=env(
        "MAX_BATCH_EVENTS"), description="largest ingest batch accepted (413 beyond)")
    max_body_bytes: int = Field(32 * MIB, ge=1024, le=1 << 30, json_schema_extra=env(
        "MAX_BODY_BYTES"), description="largest request body (413 beyond, refused before it "
        "is read)")
    max_queued_requests: int = Field(1000, ge=1, json_schema_extra=env("MAX_QUEUED_REQUESTS"),
                                     description="requests queued for the ingress before "
                                     "Serve sheds load (503)")
    max_future_skew_s: float = Field(86_400.0, ge=0, lt=10 * 365 * 86_400, json_schema_extra=env(
        "MAX_FUTURE_SKEW_S"), description="events dated further in the future are refused "
        "(422 on `occurred_at`): one event from a clock years ahead would otherwise outweigh "
        "all of a user's real ones")
    ingress_min_replicas: int = Field(1, ge=1, json_schema_extra=env("INGRESS_MIN_REPLICAS"),
                                      description="Serve autoscaling of the ingress: fewest "
                                      "replicas")
    ingress_max_replicas: int = Field(1, ge=1, json_schema_extra=env("INGRESS_MAX_REPLICAS"),
                                      description="Serve autoscaling of the ingress: most "
                                      "replicas")
    catalog_refresh_s: float = Field(10.0, gt=0, json_schema_extra=env("CATALOG_REFRESH_S"),
                                     description="how often the ingress republishes what "
                                     "changed in the stores: popularity, items and item spaces "
                                     "written by other processes")
    proxy_location: Literal["EveryNode", "HeadOnly"] = Field(
        "EveryNode", json_schema_extra=env("PROXY_LOCATION"), description=(
            "where Serve runs its HTTP proxies; `HeadOnly` when several Ray nodes share one "
            "machine's ports"))
    ray_address: str = Field("", json_schema_extra=env("RAY_ADDRESS"), description=(
        "the Ray cluster `portrait run` joins (`host:port` of its head); empty: a Ray of its "
        "own. Ctrl-C then stops Portrait's actors on it and leaves the nodes running"))

    @model_validator(mode="after")
    def _replicas(self) -> ApiSettings:
        if self.ingress_min_replicas > self.ingress_max_replicas:
            raise ValueError(f"{PREFIX}INGRESS_MIN_REPLICAS: must be <= "
                             f"{PREFIX}INGRESS_MAX_REPLICAS ({self.ingress_max_replicas})")
        return self


class SecuritySettings(Section):
    """Tokens, rate limits, pseudonyms, encryption at rest, and this process's secrets.

    ``secrets`` (``PORTRAIT_SECRET_KEY``, ``PORTRAIT_MASTER_KEY``,
    ``PORTRAIT_DATABASE_PASSWORD``) are read in each process by the same model
    (:class:`storage.secrets.ProcessSecrets`) from that process's own environment: a copy of
    the settings sent to a Ray actor or Serve replica carries none of them (Ray keeps
    arguments in its GCS), and the receiving process reads its own when it unpickles it.
    """

    auth: bool = Field(True, json_schema_extra=env("AUTH"), description=(
        "`off` skips token checks: only behind a gateway that authenticates callers itself"))
    secret_key_file: Path | None = Field(None, json_schema_extra=env("SECRET_KEY_FILE"),
                                         description="the file holding the key token digests "
                                         "are made with when `PORTRAIT_SECRET_KEY` is unset; "
                                         "unset: `<data dir>/secret.key`, created (mode 0600) "
                                         "by `portrait run` / `portrait token create`")
    token_cache_s: float = Field(5.0, ge=0, le=300, json_schema_extra=env("TOKEN_CACHE_S"),
                                 description="how long the ingress trusts what it read about "
                                 "a token: a revocation takes effect within this")
    rate_limit_rps: float = Field(0.0, ge=0, json_schema_extra=env("RATE_LIMIT_RPS"),
                                  description="per token and ingress replica, requests per "
                                  "second (bursts of two seconds' worth; 429 beyond); 0: no "
                                  "limit")
    rate_limit_events_per_s: float = Field(0.0, ge=0, json_schema_extra=env(
        "RATE_LIMIT_EVENTS_PER_S"), description="per token and ingress replica, events "
        "ingested per second; 0: no limit")
    pseudonymize: bool = Field(False, json_schema_extra=env("PSEUDONYMIZE"), description=(
        "`on` stores a keyed hash of each user id instead of the id (see \"Security and "
        "privacy\")"))
    encryption: bool = Field(True, json_schema_extra=env("ENCRYPTION"), description=(
        "seal each user's data at rest under their own key, so that erasure can destroy it"))
    master_key_file: Path | None = Field(None, json_schema_extra=env("MASTER_KEY_FILE"),
                                         description="the file holding the master key(s) when "
                                         "`PORTRAIT_MASTER_KEY` is unset; unset: `<data dir>/"
                                         "master.key`, created (mode 0600) by `portrait run`")
    inspector_secure_cookie: Literal["auto", "on", "off"] = Field(
        "auto", json_schema_extra=env("INSPECTOR_SECURE_COOKIE"), description=(
            "the inspector's login cookie is `Secure`: `auto` when the login came over https, "
            "`on`, `off`"))
    secrets: ProcessSecrets = Field(default_factory=ProcessSecrets.read, exclude=True)


class ExperimentsSettings(Section):
    """Which configuration each user gets, read and checked once when the settings load."""

    profile_config: Path | None = Field(None, json_schema_extra=env("PROFILE_CONFIG"),
                                        description="a JSON config written by `portrait tune`: "
                                        "profile, ranking and item-vector settings; unset: the "
                                        "shipped tuned config")
    experiment: Path | None = Field(None, json_schema_extra=env("EXPERIMENT"), description=(
        "an A/B experiment file: `{\"name\": ..., \"split\": {\"control\": 50, \"tuned\": 50}, "
        "\"variants\": {\"control\": null, \"tuned\": \"tuned.json\"}}` (paths relative to it; "
        "null: the shipped default); users are assigned by hashing"))
    attribution_window_s: float = Field(3600.0, ge=0, le=30 * 86_400, json_schema_extra=env(
        "ATTRIBUTION_WINDOW_S"), description="an item event without `request_id` is credited "
        "to the user's latest recommendation list that held the item, served at most this "
        "long before it")
    _policy: VariantPolicy = PrivateAttr()

    @model_validator(mode="after")
    def _load(self) -> ExperimentsSettings:
        # Read here, once: a replica elsewhere gets the documents as values, not paths.
        self._policy = _policy(self.profile_config, self.experiment)
        return self

    def variant_policy(self) -> VariantPolicy:
        """Who gets which configuration: everyone ``profile_config`` (or the shipped
        default), or the experiment's variants."""
        return self._policy

    def collab_settings(self) -> CollabSettings | None:
        """How to train the collaborative item space; None when no variant ranks with it."""
        for variant in self._policy.variants.values():
            if variant.items.alpha > 0.0:
                return variant.items.collaborative or CollabSettings()
        return None


class RetrainSettings(Section):
    """When the collaborative item space is retrained."""

    every_events: int = Field(10_000, ge=1, json_schema_extra=env("RETRAIN_EVERY_EVENTS"),
                              description="after this many new events")
    max_age_s: float = Field(3600.0, gt=0, json_schema_extra=env("RETRAIN_MAX_AGE_S"),
                             description="or this long after the last retrain, when there "
                             "are new events")


class RankerSection(Section):
    """The learned ranker each retrain trains beside the item space (the blend serves until
    one exists, and for users without history)."""

    enabled: bool = Field(True, json_schema_extra=env("RANKER_ENABLED"), description=(
        "train a learned ranker with each item-space retrain; off: the blend always serves"))
    candidates: int = Field(50, ge=1, le=2000, json_schema_extra=env("RANKER_CANDIDATES"),
                            description="rows each retriever proposes (their union is ranked)")
    labels_per_user: int = Field(5, ge=1, le=100, json_schema_extra=env(
        "RANKER_LABELS_PER_USER"), description="each user's last this many new items are "
        "training labels")
    max_groups: int = Field(5000, ge=1, json_schema_extra=env("RANKER_MAX_GROUPS"),
                            description="training users sampled at most (bounds the retrain "
                            "time)")
    min_groups: int = Field(30, ge=2, json_schema_extra=env("RANKER_MIN_GROUPS"), description=(
        "fewer users whose next item the retrievers find refuses training (the blend keeps "
        "serving)"))
    min_data_in_leaf: int = Field(50, ge=1, json_schema_extra=env("RANKER_MIN_DATA_IN_LEAF"),
                                  description="LightGBM's smallest leaf (small logs need "
                                  "fewer)")

    threads: int = Field(1, ge=1, le=64, json_schema_extra=env("RANKER_THREADS"), description=(
        "LightGBM's training threads; the retrain runs beside serving, and threads beyond the "
        "free CPUs make it far slower, not faster"))

    def ranker_settings(self) -> RankerSettings | None:
        """The trainer's settings (other fields: the domain's defaults); None when off."""
        from portrait.learned_ranker import RankerSettings  # lightgbm: only where it trains

        if not self.enabled:
            return None
        return RankerSettings(candidates=self.candidates, labels_per_user=self.labels_per_user,
                              max_groups=self.max_groups, min_groups=self.min_groups,
                              min_data_in_leaf=self.min_data_in_leaf, threads=self.threads)


class LoggingSettings(Section):
    """The ``portrait`` command's logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "WARNING", json_schema_extra=env("LOG_LEVEL"), description="Python logging level")

    @model_validator(mode="before")
    @classmethod
    def _upper(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("level"), str):
            return {**data, "level": data["level"].upper()}
        return data


def _policy(profile_config: Path | None, experiment: Path | None) -> VariantPolicy:
    if experiment is None:
        config = _load_config(profile_config, "PROFILE_CONFIG")
        return VariantPolicy.single(config.profile, config.ranking, config.item_vectors)
    try:
        doc = json.loads(experiment.read_text())
        parsed = Experiment.from_config(doc)
        variants = {}
        for name, path in dict(doc["variants"]).items():
            file = None if path is None else experiment.parent / str(path)
            config = _load_config(file, "EXPERIMENT")
            variants[name] = Variant(name, config.profile, config.ranking, config.item_vectors)
        return VariantPolicy(variants, parsed)
    except _DocumentError:
        raise
    except (OSError, ValueError, KeyError, TypeError, PortraitError) as exc:
        raise _DocumentError(f"{PREFIX}EXPERIMENT ({experiment}): {exc}") from None


class _DocumentError(ValueError):
    """A JSON document a variable names is unreadable; the message names the variable."""


def _load_config(path: Path | None, variable: str) -> TunedConfig:
    """A ``portrait tune`` file, or the shipped default (:mod:`portrait.default_config`)."""
    if path is None:
        return default_config()
    try:
        return TunedConfig.from_document(json.loads(path.read_text()))
    except (OSError, ValueError, PortraitError) as exc:
        raise _DocumentError(f"{PREFIX}{variable} ({path}): {exc}") from None


__all__ = [
    "LOG_LEVELS", "PREFIX", "ApiSettings", "ExperimentsSettings", "LoggingSettings",
    "RankerSection", "RetrainSettings", "SecuritySettings", "ShardsSettings", "StorageSettings",
    "UsersSettings",
]
