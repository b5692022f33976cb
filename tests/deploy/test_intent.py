"""What the manifests are meant to do: probes, GPUs, settings the code reads, migration order,
no secrets in the clear."""

from __future__ import annotations

import inspect
import json
import re
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import DEPLOY, OVERLAYS, env_of, one, pod_specs, ray_containers, render

# Variables set in the pods that are not Portrait settings, and who reads them.
FOREIGN_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED",  # Ray Serve (serve/__init__.py)
    "RAY_SERVE_ENABLE_HA_PROXY",  # Ray Serve: HAProxy as each pod's ingress (README)
    "PGPASSWORD",  # asyncpg, for `portrait migrate` (deploy/base/rayservice.yaml)
    "PGSSLROOTCERT",  # asyncpg: the CA for ssl=verify-full
}


def _configmaps(docs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}


def _env(overlay: str, group: str = "head") -> dict[str, Any]:
    docs = render(overlay)
    containers = dict(ray_containers(one(docs, "RayService")))
    return env_of(containers[group], _configmaps(docs))


def _settings_env_names() -> set[str]:
    """Every variable the settings model reads, the secrets each process reads included:
    taken from the model, so a new setting needs no second list here."""
    from serve.settings import Settings, variables
    from storage.secrets import ProcessSecrets

    return {v.name for v in variables(Settings)} | set(ProcessSecrets.variables())


# -- probes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_are_ready_when_portrait_is(overlay: str) -> None:
    groups = dict(ray_containers(one(render(overlay), "RayService")))
    workers = {g: c for g, c in groups.items() if g != "head"}
    assert workers
    for group, container in workers.items():
        probe = container["readinessProbe"]["httpGet"]
        assert probe["path"] == "/readyz", group
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports[probe["port"]] == 8000, group  # the Serve proxy (serveConfigV2)
        # Liveness never goes through Serve (a pod holding only shards has no proxy).
        assert container["livenessProbe"]["httpGet"]["path"] == "/api/local_raylet_healthz"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_head_turns_ready_without_the_serve_app(overlay: str) -> None:
    # KubeRay submits the Serve app only to a ready head: a head probe on a Portrait route
    # would wait for itself for ever.
    head = dict(ray_containers(one(render(overlay), "RayService")))["head"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert head[probe]["httpGet"]["path"] in {"/api/gcs_healthz", "/api/local_raylet_healthz"}
    assert "startupProbe" not in head


def test_probe_paths_are_routes_of_the_api() -> None:
    from serve.api import routes

    source = inspect.getsource(routes)
    assert '@app.get("/readyz"' in source and '@app.get("/healthz"' in source


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serve_listens_where_the_probes_and_services_look(overlay: str) -> None:
    docs = render(overlay)
    config = yaml.safe_load(one(docs, "RayService")["spec"]["serveConfigV2"])
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8000}
    (app,) = config["applications"]
    assert app["import_path"] == "serve.composition:app_from_env"
    from serve import composition

    assert callable(composition.app_from_env)


# -- GPUs and scaling ---------------------------------------------------------------------


def _gpus(container: dict[str, Any]) -> int:
    limits = container.get("resources", {}).get("limits", {})
    return int(limits.get("nvidia.com/gpu", 0))


def test_prod_requests_gpus_and_dev_does_not() -> None:
    prod = dict(ray_containers(one(render("prod-gpu"), "RayService")))
    assert _gpus(prod["gpu"]) == 1
    assert prod["gpu"]["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert _env("prod-gpu", "gpu")["PORTRAIT_ENCODER_NUM_GPUS"] == "1"
    assert "gpu" in prod["gpu"]["image"]
    dev = dict(ray_containers(one(render("dev-cpu"), "RayService")))
    assert all(_gpus(c) == 0 for c in dev.values())
    assert "nvidia.com/gpu" not in json.dumps(render("dev-cpu"))
    assert _env("dev-cpu")["PORTRAIT_ENCODER_NUM_GPUS"] == "0"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_settings_parse_and_fit_the_worker_groups(overlay: str) -> None:
    from serve.encoder_deployment import replica_options
    from serve.settings import load_settings

    env = {k: v for k, v in _env(overlay).items() if isinstance(v, str)}
    settings = load_settings(env)  # validates every value, as start-up does
    enc = settings.encoder
    cluster = one(render(overlay), "RayService")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    for group in groups.values():
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    if enc.num_gpus > 0:
        # Each encoder replica takes num_gpus: the GPU group must hold the most Serve may ask.
        gpu_pod = _gpus(dict(ray_containers({"spec": {"rayClusterConfig": cluster}}))["gpu"])
        most = enc.max_replicas or enc.num_replicas
        assert groups["gpu"]["maxReplicas"] * gpu_pod >= most * enc.num_gpus
        assert groups["gpu"]["minReplicas"] * gpu_pod >= enc.num_replicas * enc.num_gpus
        assert "autoscaling_config" in replica_options(enc)
    else:
        assert replica_options(enc) == {"num_replicas": 1}  # dev: one fixed encoder replica
        assert "gpu" not in groups


def test_prod_scales_more_than_dev() -> None:
    from serve.settings import load_settings

    dev = load_settings({k: v for k, v in _env("dev-cpu").items() if isinstance(v, str)})
    prod = load_settings({k: v for k, v in _env("prod-gpu").items() if isinstance(v, str)})
    assert prod.shards.count > dev.shards.count
    assert prod.api.ingress_max_replicas > dev.api.ingress_max_replicas
    assert (prod.encoder.max_replicas or 0) > dev.encoder.num_replicas


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_only_variables_the_code_reads(overlay: str) -> None:
    known = _settings_env_names() | FOREIGN_ENV
    docs = render(overlay)
    for group, spec in pod_specs(one(docs, "RayService")):
        for container in spec["containers"] + spec.get("initContainers", []):
            unknown = set(env_of(container, _configmaps(docs))) - known
            assert not unknown, f"{group}/{container['name']}: {unknown}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_ray_pod_gets_the_same_settings_and_secrets(overlay: str) -> None:
    docs = render(overlay)
    envs = [env_of(c, _configmaps(docs)) for _, c in ray_containers(one(docs, "RayService"))]
    assert all(env == envs[0] for env in envs[1:])
    for name in ("PORTRAIT_DATABASE_PASSWORD", "PORTRAIT_SECRET_KEY", "PORTRAIT_MASTER_KEY"):
        assert set(envs[0][name]) == {"secretKeyRef"}, name


# -- the database ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_database_url_verifies_the_server_in_a_form_asyncpg_takes(overlay: str) -> None:
    import asyncpg
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
    from sqlalchemy.engine import make_url

    from storage.database import async_url

    url = make_url(async_url(_env(overlay)["PORTRAIT_DATABASE_URL"]))
    assert url.password is None
    assert url.query.get("ssl") == "verify-full"
    # SQLAlchemy passes the URL's query to asyncpg.connect as keyword arguments; each must be
    # one asyncpg takes (libpq's `sslmode` is not).
    _, kwargs = PGDialect_asyncpg().create_connect_args(url)
    accepted = set(inspect.signature(asyncpg.connect).parameters)
    assert set(kwargs) <= accepted, set(kwargs) - accepted
    assert _env(overlay)["PGSSLROOTCERT"].startswith("/etc/portrait/db-ca/")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_migrations_run_before_the_serve_app(overlay: str) -> None:
    docs = render(overlay)
    service = one(docs, "RayService")
    specs = dict(pod_specs(service))
    (migrate,) = specs["head"]["initContainers"]
    assert migrate["command"] == ["portrait", "migrate"]
    # Same image as the head's Ray container, so the migrations match the code it serves.
    assert migrate["image"] == specs["head"]["containers"][0]["image"]
    env = env_of(migrate, _configmaps(docs))
    assert env["PORTRAIT_DATABASE_URL"] == _env(overlay)["PORTRAIT_DATABASE_URL"]
    assert set(env["PGPASSWORD"]) == {"secretKeyRef"}
    # Workers never migrate (one migrator), and nothing else does: no Job races the head.
    assert all("initContainers" not in s for g, s in specs.items() if g != "head")
    assert not [d for d in docs if d["kind"] in ("Job", "CronJob")]
    # The app itself does not migrate on a cluster, so the initContainer is what orders it.
    from serve import composition

    assert "upgrade" not in inspect.getsource(composition.app_from_env)


def test_migrate_is_a_portrait_command() -> None:
    from serve.cli import database

    assert database.cmd_migrate is not None
    assert re.search(r'sub\.add_parser\("migrate"', inspect.getsource(database))


# -- secrets --------------------------------------------------------------------------------

_SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_in_the_clear(overlay: str) -> None:
    docs = render(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    from sqlalchemy.engine import make_url

    for data in _configmaps(docs).values():
        for key, value in data.items():
            assert not _SECRET_NAME.search(key), key
            if "://" in value:
                assert make_url(value).password is None, key
    for group, spec in pod_specs(one(docs, "RayService")):
        for container in spec["containers"] + spec.get("initContainers", []):
            for item in container.get("env", []):
                if _SECRET_NAME.search(item["name"]) and item["name"] != "PGSSLROOTCERT":
                    assert "value" not in item, f"{group}: {item['name']} in the clear"


def test_no_password_anywhere_under_deploy() -> None:
    # Also the files no overlay renders (docs, the Dockerfile): no credentials in a URL, no
    # password value.
    for path in DEPLOY.rglob("*"):
        if not path.is_file() or "schemas" in path.parts:
            continue
        text = path.read_text()
        assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", text), path
        assert not re.search(r"(?i)password\s*[:=]\s*['\"]?[^\s'\"{]", text), path
