"""The application builder: the one place that binds Portrait's Serve deployments together.

``build_app`` is what the main job runs, and ``app_from_env`` is the ``import_path`` target
of the Kubernetes RayService (``deploy/``): there the database URL must come from
``PORTRAIT_DATABASE_URL``, since an embedded Postgres inside one pod would be a private,
unshared store.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.encoder_deployment import build_encoder_app
from serve.ingress import PortraitIngress
from serve.settings import Settings, SettingsError


def build_app(settings: Settings, database_url: str) -> Application:
    """Ingress (autoscaled) -> shards, with the batched encoder deployment."""
    encoder = build_encoder_app(settings.encoder)
    return PortraitIngress.options(
        autoscaling_config={
            "min_replicas": settings.ingress_min_replicas,
            "max_replicas": settings.ingress_max_replicas,
            "target_ongoing_requests": 32,
        },
        ray_actor_options={"num_cpus": 0.25},
    ).bind(settings, database_url, encoder)


def app_from_env(args: dict[str, Any] | None = None) -> Application:
    """Serve application builder for ``serve run``/RayService: settings from the environment."""
    settings = Settings.from_env()
    if not settings.database_url:
        raise SettingsError("PORTRAIT_DATABASE_URL: required when deployed on a cluster")
    return build_app(settings, settings.database_url)
