"""CloudNativePG's Cluster and Prometheus Operator's ServiceMonitor.

Neither operator's CRD schema is available offline here (only KubeRay's was copied into
deploy/schemas/), so these tests check structurally the fields Portrait relies on: the names
the RayService's references resolve to, the TLS and secret wiring, the scrape target. They do
not prove that the operators accept every other field.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.manifests import OVERLAYS, one, ray_containers, render


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cnpg_cluster_provides_what_the_rayservice_reads(overlay: str) -> None:
    docs = render(overlay)
    cluster = one(docs, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    name = cluster["metadata"]["name"]
    spec = cluster["spec"]
    assert isinstance(spec["instances"], int) and spec["instances"] >= 1
    assert spec["storage"]["size"].endswith("Gi")
    initdb = spec["bootstrap"]["initdb"]
    # CNPG names the owner's Secret <cluster>-app, its CA Secret <cluster>-ca and the
    # primary's Service <cluster>-rw; the RayService must point at exactly those.
    refs = set()
    for _, container in ray_containers(one(docs, "RayService")):
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref and ref["key"] == "password":
                refs.add(ref["name"])
    assert refs == {f"{name}-app"}
    env = one(docs, "ConfigMap", _env_configmap(docs))["data"]
    from sqlalchemy.engine import make_url

    url = make_url(env["PORTRAIT_DATABASE_URL"])
    assert url.host == f"{name}-rw"
    assert (url.username, url.database) == (initdb["owner"], initdb["database"])
    volumes = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"][
        "template"]["spec"]["volumes"]
    assert {v["secret"]["secretName"] for v in volumes if "secret" in v} == {f"{name}-ca"}


def test_prod_runs_a_replicated_database() -> None:
    assert one(render("prod-gpu"), "Cluster")["spec"]["instances"] >= 3
    assert one(render("dev-cpu"), "Cluster")["spec"]["instances"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_servicemonitor_scrapes_the_metrics_service_with_a_token(overlay: str) -> None:
    docs = render(overlay)
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(docs, "Service", "portrait-metrics")
    labels = service["metadata"]["labels"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    # Only the metrics Service matches, or Prometheus would scrape more than one target.
    matching = [d for d in docs if d["kind"] == "Service"
                and selector.items() <= d["metadata"].get("labels", {}).items()]
    assert matching == [service]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    # /metrics needs a metrics:read token (serve/api/routes.py): from a Secret.
    assert endpoint["authorization"]["type"] == "Bearer"
    assert set(endpoint["authorization"]["credentials"]) == {"name", "key"}
    # The Service's pods are the head's: it always runs a Serve proxy.
    head = one(docs, "RayService")["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]
    assert service["spec"]["selector"].items() <= head["metadata"]["labels"].items()


def _env_configmap(docs: list[dict[str, Any]]) -> str:
    (name,) = [d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"
               and d["metadata"]["name"].startswith("portrait-env")]
    return str(name)
