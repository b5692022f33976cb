"""The Grafana dashboard queries only metrics Portrait exports, with labels they carry, and the
overlays ship it as the ConfigMap Grafana's sidecar loads."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.manifests import DEPLOY, OVERLAYS, one, render

DASHBOARD = DEPLOY / "grafana" / "portrait-dashboard.json"
# Labels Prometheus adds to every scraped series (target and ServiceMonitor labels).
SCRAPE_LABELS = {"job", "instance", "namespace", "service", "pod", "endpoint", "container"}
_NAME = re.compile(r"\bportrait_[a-z0-9_]+")


def exported() -> dict[str, set[str]]:
    """Every sample name /metrics can carry, with its labels: serve.metrics.render run on
    stats holding every key the shards, the encoder and the retrain job report. A labelled
    family with no child yet has no samples: its sample names follow from its type and its
    labels from the declaration (left unchanged, so no other test sees a new series)."""
    from prometheus_client.metrics import MetricWrapperBase

    from serve import metrics

    declared = {m._name: set(m._labelnames) for m in vars(metrics).values()
                if isinstance(m, MetricWrapperBase)}
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    shard_stats = {key: 1.0 for key in metrics._SHARD_METRICS}
    retrain = {key: 1.0 for key in metrics._RETRAIN_METRICS}
    text = metrics.render({"shard-0": shard_stats}, {"batches": 1, "texts": 2}, retrain)
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
        if not family.samples:
            for suffix in suffixes[family.type]:
                labels = declared[family.name] | ({"le"} if suffix == "_bucket" else set())
                names.setdefault(family.name + suffix, set()).update(labels)
    return names


def _exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def test_every_metric_in_the_dashboard_is_exported() -> None:
    names = exported()
    used = {n for e in _exprs() for n in _NAME.findall(e)}
    assert used
    assert used <= set(names), sorted(used - set(names))


def test_grouping_labels_exist() -> None:
    names = exported()
    for expr in _exprs():
        labels = set().union(*(names[n] for n in _NAME.findall(expr)), {"le"}, SCRAPE_LABELS)
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            wanted = {label.strip() for label in group.split(",")}
            assert wanted <= labels, (expr, wanted - labels)


def test_the_check_catches_a_wrong_name() -> None:
    assert "portrait_shard_pending_events" in exported()
    assert "portrait_shard_pending_event" not in exported()
    assert "portrait_api_errors" not in exported()  # a counter is exported as ..._total


def test_the_dashboard_covers_the_service() -> None:
    used = {n for e in _exprs() for n in _NAME.findall(e)}
    for needed in (
        "portrait_ingested_events_total", "portrait_ingest_latency_seconds_bucket",
        "portrait_recommendation_latency_seconds_bucket", "portrait_api_errors_total",
        "portrait_shard_pending_events", "portrait_shard_calls_in_flight",
        "portrait_storage_retries_total", "portrait_storage_unavailable_total",
        "portrait_storage_failures_total", "portrait_shard_version_conflicts_total",
        "portrait_active_users", "portrait_user_passivations_total",
        "portrait_encoder_texts_total", "portrait_encoder_batches_total",
        "portrait_encoder_texts_in_flight",
    ):
        assert needed in used, needed


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_ship_the_dashboard_to_grafana(overlay: str) -> None:
    configmap: dict[str, Any] = one(render(overlay), "ConfigMap", "portrait-grafana-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(configmap["data"]["portrait-dashboard.json"]) == json.loads(
        DASHBOARD.read_text())
