"""Portrait's settings: one typed value read from ``PORTRAIT_*`` variables, checked at start-up.

Every variable is optional; the defaults run the embedded stack on one machine. A bad value
stops start-up with a message naming the variable.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from actors.host import HostSettings
from portrait.default_config import default_config
from portrait.errors import PortraitError
from portrait.experiments import Experiment
from portrait.scaling import ShardScaling
from portrait.tuned_config import CollabSettings, TunedConfig
from portrait.variants import Variant, VariantPolicy
from serve.encoder_settings import EncoderSettings
from serve.summarizer import SummarizerSettings

PREFIX = "PORTRAIT_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_log = logging.getLogger(__name__)


class SettingsError(ValueError):
    """A ``PORTRAIT_*`` variable (or the file it names) is invalid."""


@dataclass(frozen=True)
class Settings:
    """Attributes map to ``PORTRAIT_<NAME>`` (upper case).

    Attributes:
        database_url: Postgres URL; unset = the embedded Postgres under ``data_dir``.
        data_dir: where the embedded Postgres and caches live.
        host, port: where the HTTP API listens. The default binds loopback only.
        shards: number of ProfileShard actors at the first start (``POST /v1/shards``
            and the autoscaler change it at run time; a redeploy keeps the current count).
        shards_min, shards_max: bounds of the shard autoscaler; ``shards_max`` 0 turns it off.
        shard_target_active_users, shard_target_queue: the load per shard it aims at (users
            in memory; events waiting plus calls in flight).
        max_batch_events: largest ingest batch accepted (413 beyond).
        profile_config: a JSON file from ``portrait tune`` (profile + ranking config);
            unset = the shipped default (portrait/default_config.py: tuned on MovieLens).
        experiment: a JSON file defining an A/B experiment (see :meth:`variant_policy`);
            unset = everyone gets ``profile_config``.
        snapshot_every, idle_timeout_s, memory_budget_mb: user-actor policy per shard.
        snapshot_min_tail: a user leaving memory is snapshotted only this many events past
            their last snapshot (shorter tails replay from the log).
        ingress_min_replicas, ingress_max_replicas: Serve autoscaling of the HTTP ingress.
        retrain_every_events, retrain_max_age_s: the collaborative item space is retrained
            after this many new events, or this long after the last retrain when there are
            new events.
        catalog_refresh_s: how often the ingress looks for a newer catalog, item space or
            popularity in the stores (written by another process, or new interactions) and
            republishes.
        shard_call_timeout_s: deadline of every ingress -> shard call (503 beyond).
        max_queued_requests: requests waiting for an ingress replica before Serve sheds load
            with 503.
        max_body_bytes: largest request body accepted (413 beyond), checked before it is read.
        max_future_skew_s: how far in the future an event's ``occurred_at`` may lie (client
            clocks drift); later ones are refused with 422.
        auth: whether every route but /healthz and /readyz needs a token (``off`` only
            behind a gateway that authenticates for us).
        secret_key_file: the key token digests are made with; default
            ``<data_dir>/secret.key``. ``PORTRAIT_SECRET_KEY`` (read from the environment by
            each process that needs it, never passed along) takes precedence.
        token_cache_s: how long the ingress trusts what it read about a token (a revocation
            takes effect within this).
        rate_limit_rps, rate_limit_events_per_s: per token and ingress replica, requests and
            ingested events per second beyond which calls get 429 (0: no limit).
        proxy_location: where Serve runs HTTP proxies: ``EveryNode`` (a cluster behind a
            load balancer) or ``HeadOnly`` (several Ray nodes on one machine share its ports).
        ray_address: the Ray cluster ``portrait run`` joins (``host:port`` of its head, e.g.
            one that ``portrait cluster up`` started); empty: start a Ray of its own.
        pseudonymize: store a keyed hash of each user id instead of the id
            (:mod:`portrait.pseudonyms`); the API still speaks the caller's ids.
        encryption: seal each user's personal data at rest with their own key, so that an
            erasure can destroy it (:mod:`storage.encryption`); ``off`` writes plaintext.
        master_key_file: where the master key is read from when ``PORTRAIT_MASTER_KEY`` is
            not set; default ``<data_dir>/master.key`` (``portrait run`` creates it).
        summaries: ``PORTRAIT_SUMMARIES=on|off`` and ``PORTRAIT_SUMMARIES_*``, the profile
            summaries' model (:mod:`serve.summarizer`; off: template summaries only).
        log_level: Python logging level of the ``portrait`` command.
        datasets_dir: where non-bundled evaluation data sets live (default
            ``../shared/datasets`` beside the checkout).
        attribution_window_s: an item event without a ``request_id`` is attributed to the
            user's latest recommendation list that held the item, served at most this long
            before it (online experiments, :mod:`portrait.attribution`).
    """

    database_url: str | None = None
    data_dir: Path = Path(".portrait")
    host: str = "127.0.0.1"
    port: int = 8000
    shards: int = 2
    shards_min: int = 1
    shards_max: int = 0
    shard_target_active_users: int = 50_000
    shard_target_queue: int = 64
    max_batch_events: int = 1000
    profile_config: Path | None = None
    experiment: Path | None = None
    snapshot_every: int = 50
    snapshot_min_tail: int = 10
    idle_timeout_s: float = 600.0
    memory_budget_mb: int = 256
    ingress_min_replicas: int = 1
    ingress_max_replicas: int = 1
    retrain_every_events: int = 10_000
    retrain_max_age_s: float = 3600.0
    catalog_refresh_s: float = 10.0
    max_future_skew_s: float = 86_400.0
    max_body_bytes: int = 32 * 1024 * 1024
    shard_call_timeout_s: float = 60.0
    max_queued_requests: int = 1000
    auth: bool = True
    secret_key_file: Path | None = None
    token_cache_s: float = 5.0
    rate_limit_rps: float = 0.0
    rate_limit_events_per_s: float = 0.0
    pseudonymize: bool = False
    encryption: bool = True
    master_key_file: Path | None = None
    proxy_location: str = "EveryNode"
    ray_address: str = ""
    log_level: str = "WARNING"
    datasets_dir: Path | None = None
    attribution_window_s: float = 3600.0
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    summaries: SummarizerSettings = field(default_factory=SummarizerSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        kwargs: dict[str, Any] = {}
        simple = {
            "database_url": str,
            "data_dir": Path,
            "host": str,
            "port": int,
            "shards": int,
            "shards_min": int,
            "shards_max": int,
            "shard_target_active_users": int,
            "shard_target_queue": int,
            "max_batch_events": int,
            "profile_config": Path,
            "experiment": Path,
            "snapshot_every": int,
            "snapshot_min_tail": int,
            "idle_timeout_s": float,
            "memory_budget_mb": int,
            "ingress_min_replicas": int,
            "ingress_max_replicas": int,
            "log_level": str,
            "datasets_dir": Path,
            "retrain_every_events": int,
            "retrain_max_age_s": float,
            "catalog_refresh_s": float,
            "max_future_skew_s": float,
            "max_body_bytes": int,
            "shard_call_timeout_s": float,
            "max_queued_requests": int,
            "secret_key_file": Path,
            "master_key_file": Path,
            "token_cache_s": float,
            "rate_limit_rps": float,
            "rate_limit_events_per_s": float,
            "proxy_location": str,
            "ray_address": str,
            "attribution_window_s": float,
        }
        for name, kind in simple.items():
            raw = env.get(PREFIX + name.upper(), "").strip()
            if not raw:
                continue
            try:
                kwargs[name] = kind(raw)
            except ValueError:
                raise SettingsError(
                    f"{PREFIX}{name.upper()}: {raw!r} is not a valid {kind.__name__}"
                ) from None
        for switch in ("auth", "pseudonymize", "encryption"):
            raw_switch = env.get(PREFIX + switch.upper(), "").strip().lower()
            if raw_switch:
                if raw_switch not in ("on", "off"):
                    raise SettingsError(
                        f"{PREFIX}{switch.upper()}: {raw_switch!r} is not 'on' or 'off'")
                kwargs[switch] = raw_switch == "on"
        try:
            kwargs["encoder"] = EncoderSettings.from_env(env)
            kwargs["summaries"] = SummarizerSettings.from_env(env)
        except ValueError as exc:
            raise SettingsError(str(exc)) from None
        settings = cls(**kwargs)
        settings.validate()
        return settings

    def validate(self) -> None:
        checks = [
            (1 <= self.port <= 65535, "PORT", "must be a TCP port"),
            (1 <= self.shards <= 1024, "SHARDS", "must be between 1 and 1024"),
            (self.shards_max == 0 or 1 <= self.shards_min <= self.shards_max <= 1024,
             "SHARDS_MAX", "must be 0 (no autoscaling) or between SHARDS_MIN and 1024"),
            (self.shard_target_active_users >= 1 and self.shard_target_queue >= 1,
             "SHARD_TARGET_ACTIVE_USERS", "targets must be positive"),
            (1 <= self.max_batch_events <= 100_000, "MAX_BATCH_EVENTS", "must be 1..100000"),
            (1024 <= self.max_body_bytes <= 1 << 30, "MAX_BODY_BYTES", "must be 1 KiB..1 GiB"),
            (self.shard_call_timeout_s > 0, "SHARD_CALL_TIMEOUT_S", "must be positive"),
            (self.max_queued_requests >= 1, "MAX_QUEUED_REQUESTS", "must be at least 1"),
            (self.snapshot_every >= 1, "SNAPSHOT_EVERY", "must be at least 1"),
            (self.snapshot_min_tail >= 1, "SNAPSHOT_MIN_TAIL", "must be at least 1"),
            (self.idle_timeout_s > 0, "IDLE_TIMEOUT_S", "must be positive"),
            (self.memory_budget_mb >= 1, "MEMORY_BUDGET_MB", "must be at least 1"),
            (
                1 <= self.ingress_min_replicas <= self.ingress_max_replicas,
                "INGRESS_MIN_REPLICAS",
                "must be >= 1 and <= PORTRAIT_INGRESS_MAX_REPLICAS",
            ),
            (self.retrain_every_events >= 1, "RETRAIN_EVERY_EVENTS", "must be at least 1"),
            (self.retrain_max_age_s > 0, "RETRAIN_MAX_AGE_S", "must be positive"),
            (self.catalog_refresh_s > 0, "CATALOG_REFRESH_S", "must be positive"),
            (0 <= self.token_cache_s <= 300, "TOKEN_CACHE_S", "must be 0..300 seconds"),
            (self.proxy_location in ("EveryNode", "HeadOnly"), "PROXY_LOCATION",
             "must be EveryNode or HeadOnly"),
            (self.rate_limit_rps >= 0, "RATE_LIMIT_RPS", "must be >= 0 (0: no limit)"),
            (self.rate_limit_events_per_s >= 0, "RATE_LIMIT_EVENTS_PER_S",
             "must be >= 0 (0: no limit)"),
            (0 <= self.max_future_skew_s < 10 * 365 * 86_400, "MAX_FUTURE_SKEW_S",
             "must be between 0 and ten years of seconds"),
            (self.log_level.upper() in _LOG_LEVELS, "LOG_LEVEL", f"must be one of {_LOG_LEVELS}"),
            (0 <= self.attribution_window_s <= 30 * 86_400, "ATTRIBUTION_WINDOW_S",
             "must be between 0 and 30 days of seconds"),
        ]
        for ok, name, reason in checks:
            if not ok:
                raise SettingsError(f"{PREFIX}{name}: {reason}")
        self.variant_policy()

    def variant_policy(self) -> VariantPolicy:
        """Who gets which configuration.

        Without ``experiment``: everyone gets ``profile_config`` (or the defaults). With it, a
        file like ``{"name": "tuned-vs-default", "split": {"control": 50, "tuned": 50},
        "variants": {"control": null, "tuned": "tuned-movielens.json"}}``; each variant names
        a config file (relative to the experiment file) or null for the shipped default.
        """
        if self.experiment is None:
            config = _load_config(self.profile_config, "PROFILE_CONFIG")
            return VariantPolicy.single(config.profile, config.ranking, config.item_vectors)
        var = f"{PREFIX}EXPERIMENT ({self.experiment})"
        try:
            doc = json.loads(self.experiment.read_text())
            experiment = Experiment.from_config(doc)
            variants = {}
            for name, path in dict(doc["variants"]).items():
                file = None if path is None else self.experiment.parent / str(path)
                config = _load_config(file, "EXPERIMENT")
                variants[name] = Variant(name, config.profile, config.ranking, config.item_vectors)
            return VariantPolicy(variants, experiment)
        except SettingsError:
            raise
        except (OSError, ValueError, KeyError, TypeError, PortraitError) as exc:
            raise SettingsError(f"{var}: {exc}") from None

    def shard_scaling(self) -> ShardScaling | None:
        """The shard autoscaler's policy; None (a fixed count, resized only on request) unless
        ``PORTRAIT_SHARDS_MAX`` is set."""
        if self.shards_max <= 0:
            return None
        return ShardScaling(self.shards_min, self.shards_max, self.shard_target_active_users,
                            self.shard_target_queue)

    def collab_settings(self) -> CollabSettings | None:
        """How to train the collaborative item space; None when no variant ranks with it."""
        policy = self.variant_policy()
        for variant in policy.variants.values():
            if variant.items.alpha > 0.0:
                return variant.items.collaborative or CollabSettings()
        return None

    def host_settings(self) -> HostSettings:
        return HostSettings(
            snapshot_every=self.snapshot_every,
            snapshot_min_tail=self.snapshot_min_tail,
            idle_timeout_s=self.idle_timeout_s,
            memory_budget_bytes=self.memory_budget_mb * 1024 * 1024,
        )


def _load_config(path: Path | None, variable: str) -> TunedConfig:
    """A ``portrait tune`` file, or the shipped default (:mod:`portrait.default_config`)."""
    if path is None:
        return default_config()
    try:
        return TunedConfig.from_document(json.loads(path.read_text()))
    except (OSError, ValueError, PortraitError) as exc:
        raise SettingsError(f"{PREFIX}{variable} ({path}): {exc}") from None
