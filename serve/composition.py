"""The composition root: the one place that builds the running system from settings.

Two shapes of the same system, built from the same parts:

* :func:`build_app` (and :func:`app_from_env` for KubeRay): the Ray system — the batched
  vLLM encoder deployment, N ProfileShard actors, and the ingress deployment, which builds
  its context with :func:`ray_ingress_context` in its own process.
* :func:`in_process`: the ingress routes, shards and stores in one process, without Ray —
  what the fast API test tier and the HTTP-free benchmarks run.

Stores are opened by URL (``postgresql://…``, ``memory://NAME``; :mod:`storage.stores`).
Every adapter is constructed here and passed in through constructors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from fastapi import FastAPI

from actors.catalog_publication import CatalogPublication, RetrainPolicy
from actors.catalog_view import LocalCatalogChannel
from actors.dependencies import ConnectedEncoder
from actors.ingress_control import IngressControl
from actors.ranker_trainer import RankerPolicy
from actors.shard_controller import ShardController, resize_bound
from actors.shard_fleet import LocalFleet, ShardDirectory
from actors.shard_router import ShardRouter
from actors.shard_service import ShardService, ShardSettings
from portrait.ports import AsyncEncoder
from portrait.pseudonyms import pseudonymizer
from portrait.routing import shard_names
from serve.api.auth import Authenticator
from serve.api.context import ApiContext, Shard
from serve.api.routes import create_app
from serve.experiments import Experiments
from serve.secret_key import load_secret_key
from serve.settings import Settings, SettingsError
from serve.summary_service import LocalSummarizer, Summarizer, SummaryService
from storage.stores import StoreFactory, Stores, is_memory_url

APP_NAME = "portrait"
ENCODER_DEPLOYMENT = "EncoderDeployment"


def shard_settings(settings: Settings) -> ShardSettings:
    return ShardSettings(variants=settings.experiments.variant_policy(),
                         host=settings.users.host_settings())


def retrain_policy(settings: Settings) -> RetrainPolicy | None:
    """The item-space retrain; None when no variant ranks with collaborative vectors."""
    collab = settings.experiments.collab_settings()
    if collab is None:
        return None
    return RetrainPolicy(collab, settings.retrain.every_events, settings.retrain.max_age_s,
                         ranker_policy(settings))


def ranker_policy(settings: Settings) -> RankerPolicy | None:
    """The learned ranker trained with each item space, in the configuration of the variant
    it serves (:meth:`VariantPolicy.learned`); None when it is off or serves no variant."""
    ranker = settings.ranker.ranker_settings()
    served = settings.experiments.variant_policy().learned()
    if ranker is None or served is None:
        return None
    return RankerPolicy(ranker, served.profile, served.ranking, served.items.alpha)


def shard_controller(settings: Settings, router: ShardRouter, fleet: Any, directory: Any,
                     cpus: float) -> ShardController:
    """The resizes and autoscaling of an ingress: bounded by ``PORTRAIT_SHARDS_MAX``, else
    by what ``cpus`` can run (:func:`actors.shard_controller.resize_bound`)."""
    scaling = settings.shards.scaling()
    bound = resize_bound(scaling.max_shards if scaling is not None else 0, cpus,
                         at_least=settings.shards.count)
    # Removed shards run on long enough for every ingress replica to have followed (each
    # checks at its control tick, and at once when a shard refuses a user).
    return ShardController(router, fleet, directory, bound, scaling,
                           grace_s=max(1.0, 2 * settings.api.catalog_refresh_s))


# -- the Ray system -----------------------------------------------------------------------


def build_app(settings: Settings, database_url: str) -> Any:
    """Encoder deployment, shard actors and the autoscaled ingress, as a Serve application.
    Needs a connected Ray (the shards are detached actors created here)."""
    from actors.catalog_registry import RegistryChannel
    from actors.shard import current_names, spawn_shards
    from serve.encoder_deployment import ServeEncoderConnector, build_encoder_app
    from serve.ingress import PortraitIngress

    if is_memory_url(database_url):
        raise SettingsError(
            "PORTRAIT_DATABASE_URL: memory:// lives in one process; the Ray system's shards "
            "run in their own, so it needs postgresql://"
        )
    stores = store_factory(settings, database_url)
    connector = ServeEncoderConnector(ENCODER_DEPLOYMENT, APP_NAME)
    # A resized cluster keeps its shard count across redeploys (the directory has it).
    shards = spawn_shards(
        current_names(settings.shards.count), stores, connector, RegistryChannel(),
        shard_settings(settings),
    )
    from actors.publication_actor import spawn_publication_actor

    publication = spawn_publication_actor(
        stores, connector, RegistryChannel(), tuple(settings.experiments.variant_policy().alphas()),
        retrain_policy(settings), settings.api.catalog_refresh_s, settings.shards.call_timeout_s,
    )
    encoder = build_encoder_app(settings.encoder)
    build_context: Callable[..., ApiContext] = ray_ingress_context
    context_args: tuple[Any, ...] = ()
    if settings.summaries.enabled:  # the summary model: its own deployment, batched
        from serve.summarizer_deployment import build_summarizer_app

        build_context = ray_ingress_context_with_summaries
        context_args = (build_summarizer_app(settings.summaries, settings.storage.data_dir),)
    return PortraitIngress.options(  # type: ignore[attr-defined]  # added by @serve.deployment
        autoscaling_config={
            "min_replicas": settings.api.ingress_min_replicas,
            "max_replicas": settings.api.ingress_max_replicas,
            "target_ongoing_requests": 32,
        },
        # Beyond this many waiting requests per caller, Serve answers 503 at once instead of
        # queueing without bound.
        max_queued_requests=settings.api.max_queued_requests,
        ray_actor_options={"num_cpus": 0.25},
        # No database URL in the deployment's arguments (Ray keeps them in its GCS): the
        # replica opens its stores from ``stores``, whose password comes from its environment.
    ).bind(build_context, settings.replace(storage={"database_url": None}), stores,
           encoder, shards, publication, *context_args)


def ray_ingress_context(
    settings: Settings, stores: StoreFactory, encoder_handle: Any, shard_handles: list[Any],
    publication_handle: Any, summaries: SummaryService | None = None,
) -> ApiContext:
    """The ingress replica's context: its own store pool, the encoder through its handle,
    the shards through proxies, the catalog's publication and retraining through their
    actor."""
    import ray

    from actors.catalog_registry import RegistryChannel
    from actors.publication_actor import RemotePublication
    from actors.shard import RayFleet, RemoteDirectory, proxies, shard_directory
    from serve.encoder_deployment import ServeEncoderConnector, not_cancelled

    async def encoder_stats() -> Mapping[str, Any] | None:
        stats: Mapping[str, Any] = await not_cancelled(encoder_handle.stats.remote())
        return stats

    api_stores = stores.open_now()
    fleet = RayFleet(stores, ServeEncoderConnector(ENCODER_DEPLOYMENT, APP_NAME),
                     RegistryChannel(), shard_settings(settings), settings.shards.call_timeout_s)
    directory = RemoteDirectory(shard_directory())
    # proxies forward every Shard method
    router = ShardRouter(
        cast("list[Shard]", proxies(shard_handles, settings.shards.call_timeout_s)),
        directory, fleet)
    # The shards take no CPU of Ray's accounting; the cluster's CPUs say what it can run.
    cpus = float(ray.cluster_resources().get("CPU", 1.0))  # type: ignore[no-untyped-call]
    publication = RemotePublication(publication_handle)
    control = IngressControl(
        router, publication, RegistryChannel(),
        ServeEncoderConnector(ENCODER_DEPLOYMENT, APP_NAME, handle=encoder_handle),
        api_stores, shard_controller(settings, router, fleet, directory, cpus),
        tick_s=settings.api.catalog_refresh_s)
    return ApiContext(
        api_stores, router, control, settings.api, encoder_stats,
        secure_cookie=settings.security.inspector_secure_cookie,
        retraining=publication if retrain_policy(settings) is not None else None,
        # The key is read here, in the replica's process (environment or key file).
        auth=authenticator(settings, api_stores),
        pseudonym=pseudonym_of(settings),
        experiments=experiments(settings, api_stores),
        summaries=summaries,
    )


def experiments(settings: Settings, stores: Stores) -> Experiments:
    """An ingress's impression recorder and experiment reports."""
    return Experiments(stores, settings.experiments.variant_policy().experiment,
                       window_s=settings.experiments.attribution_window_s)


def ray_ingress_context_with_summaries(
    settings: Settings, stores: StoreFactory, encoder_handle: Any, shard_handles: list[Any],
    publication_handle: Any, summarizer_handle: Any,
) -> ApiContext:
    """:func:`ray_ingress_context`, with summaries written by the PortraitSummarizer
    deployment."""
    from serve.summarizer_deployment import ServeSummarizer

    return ray_ingress_context(
        settings, stores, encoder_handle, shard_handles, publication_handle,
        summary_service(settings, ServeSummarizer(summarizer_handle)))


def summary_service(settings: Settings, summarizer: Summarizer | None) -> SummaryService:
    """An ingress's summaries: the model's when there is one, else the template's."""
    s = settings.summaries
    return SummaryService(summarizer, cache_size=s.cache_size, timeout_s=s.timeout_s)


def store_factory(settings: Settings, database_url: str) -> StoreFactory:
    """How every process of the system opens its stores: encrypted at rest unless
    ``PORTRAIT_ENCRYPTION=off``, each process reading the master key itself."""
    key_file = settings.security.master_key_file or settings.storage.data_dir / "master.key"
    return StoreFactory(database_url, encrypt=settings.security.encryption,
                        master_key_file=str(key_file))


def pseudonym_of(
    settings: Settings, secret_key: bytes | None = None
) -> Callable[[str], str] | None:
    """The user-id pseudonyms of an ingress, or None when ids are stored as given."""
    if not settings.security.pseudonymize:
        return None
    return pseudonymizer(secret_key if secret_key is not None else load_secret_key(settings))


def authenticator(
    settings: Settings, stores: Stores, secret_key: bytes | None = None
) -> Authenticator | None:
    """The token checks of an ingress, or None with ``PORTRAIT_AUTH=off``."""
    if not settings.security.auth:
        return None
    key = secret_key if secret_key is not None else load_secret_key(settings)
    return Authenticator(stores.tokens, key, cache_s=settings.security.token_cache_s,
                         requests_per_s=settings.security.rate_limit_rps,
                         events_per_s=settings.security.rate_limit_events_per_s)


def app_from_env(args: dict[str, Any] | None = None) -> Any:
    """Serve application builder for ``serve run``/RayService: settings from the environment."""
    settings = Settings.from_env()
    if not settings.storage.database_url:
        raise SettingsError("PORTRAIT_DATABASE_URL: required when deployed on a cluster")
    return build_app(settings, settings.storage.database_url)


# -- in one process -----------------------------------------------------------------------


@dataclass
class InProcessSystem:
    """The API over shards in this process. ``app`` is a plain ASGI app."""

    app: FastAPI
    context: ApiContext
    fleet: LocalFleet
    publication: CatalogPublication

    @property
    def shards(self) -> list[ShardService]:
        """Every running shard (a resize starts and retires some)."""
        return list(self.fleet.running.values())

    async def close(self) -> None:
        """Stop publication and retraining, snapshot every user and close the stores."""
        await self.context.close()
        await self.publication.close()
        for shard in self.shards:
            await shard.close()
        await self.context.stores.close()


def in_process(
    settings: Settings, url: str, encoder: AsyncEncoder, *, secret_key: bytes | None = None,
    summarizer: Summarizer | None = None,
) -> InProcessSystem:
    """The system without Ray: the real routes, error mapping and shard logic over stores
    opened from ``url`` (``memory://…`` or a migrated ``postgresql://…``). Tokens are checked
    unless ``settings.security.auth`` is off, with ``secret_key`` or else the configured one.
    Summaries come from ``summarizer``, else from the model in this process when
    ``settings.summaries`` enables it, else from the template."""
    channel = LocalCatalogChannel()
    connector = ConnectedEncoder(encoder)
    policy = shard_settings(settings)
    factory = store_factory(settings, url)
    directory = ShardDirectory()

    def make_shard(name: str) -> ShardService:
        return ShardService(name, factory, connector, channel, policy, directory.current)

    fleet = LocalFleet(make_shard,
                       [make_shard(name) for name in shard_names(settings.shards.count)])
    router = ShardRouter(list(fleet.running.values()), directory, fleet)
    stores = factory.open_now()
    # The one publication of this system; it reaches the shards through the live router.
    retrain = retrain_policy(settings)
    publication = CatalogPublication(factory, connector, channel, router,
                                     policy.variants.alphas(), retrain,
                                     settings.api.catalog_refresh_s)
    control = IngressControl(
        router, publication, channel, connector, stores,
        shard_controller(settings, router, fleet, directory, float(os.cpu_count() or 1)),
        tick_s=settings.api.catalog_refresh_s)
    if summarizer is None and settings.summaries.enabled:
        from serve.summarizer import VllmSummarizer

        summarizer = LocalSummarizer(VllmSummarizer(settings.summaries, settings.storage.data_dir))
    context = ApiContext(
        stores, router, control, settings.api,
        secure_cookie=settings.security.inspector_secure_cookie,
        retraining=publication if retrain is not None else None,
        auth=authenticator(settings, stores, secret_key),
        pseudonym=pseudonym_of(settings, secret_key),
        experiments=experiments(settings, stores),
        summaries=summary_service(settings, summarizer),
    )
    return InProcessSystem(create_app(context), context, fleet, publication)
