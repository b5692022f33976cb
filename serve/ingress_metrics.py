"""Portrait's own Prometheus metrics, as the ingress exposes them on ``/metrics``.

Request-path metrics live in this process (prometheus_client's default registry). The shards
and the encoder run in other processes; at scrape time their counters are fetched and written
out as metric families labelled by ``shard``, so one scrape sees the whole service.
"""

from __future__ import annotations

from typing import Any, Mapping

from prometheus_client import Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry, REGISTRY

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

INGESTED = Counter("portrait_ingested_events", "Events accepted by POST /v1/events.")
INGEST_LATENCY = Histogram(
    "portrait_ingest_latency_seconds",
    "POST /v1/events: validation, durable append and fold, per request.",
    buckets=_LATENCY_BUCKETS,
)
RECOMMEND_LATENCY = Histogram(
    "portrait_recommendation_latency_seconds",
    "GET recommendations, per request, by A/B variant ('default' without an experiment).",
    ["variant"],
    buckets=_LATENCY_BUCKETS,
)

# shard stats key -> (metric name, help, kind)
_SHARD_METRICS = {
    "ingested": ("portrait_shard_appended_events_total", "Events durably appended and folded.", "counter"),
    "duplicates": ("portrait_shard_duplicate_events_total", "Re-sent event_ids answered from the log.", "counter"),
    "commits": ("portrait_shard_append_transactions_total", "Group-commit transactions.", "counter"),
    "activations": ("portrait_user_activations_total", "Users loaded (snapshot + replay).", "counter"),
    "replayed_events": ("portrait_replayed_events_total", "Events replayed on activation or time travel.", "counter"),
    "activation_seconds": ("portrait_activation_seconds_total", "Time spent activating users.", "counter"),
    "passivations": ("portrait_user_passivations_total", "Users dropped from memory.", "counter"),
    "snapshots": ("portrait_snapshots_total", "Snapshots written.", "counter"),
    "recommendations": ("portrait_shard_recommendations_total", "Recommendations computed.", "counter"),
    "recommendation_seconds": ("portrait_shard_recommendation_seconds_total", "Time spent ranking.", "counter"),
    "active_users": ("portrait_active_users", "Users held in memory.", "gauge"),
    "active_bytes": ("portrait_active_user_bytes", "Approximate memory of active users.", "gauge"),
}


class _Snapshot(Collector):
    def __init__(self, shards: Mapping[str, Any], encoder: Mapping[str, Any] | None) -> None:
        self._shards, self._encoder = shards, encoder

    def collect(self):  # type: ignore[no-untyped-def]
        up = GaugeMetricFamily("portrait_shard_up", "1 if the shard answered the scrape.", labels=["shard"])
        for name, stats in self._shards.items():
            up.add_metric([name], 0.0 if isinstance(stats, BaseException) else 1.0)
        yield up
        for key, (metric, help_text, kind) in _SHARD_METRICS.items():
            family_cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            name = metric[: -len("_total")] if kind == "counter" else metric
            family = family_cls(name, help_text, labels=["shard"])
            for shard, stats in self._shards.items():
                if isinstance(stats, Mapping) and key in stats:
                    family.add_metric([shard], float(stats[key]))
            yield family
        if self._encoder:
            calls = CounterMetricFamily("portrait_encoder_batches", "Engine calls by the batcher.")
            calls.add_metric([], float(self._encoder.get("batches", 0)))
            yield calls
            texts = CounterMetricFamily("portrait_encoder_texts", "Texts encoded.")
            texts.add_metric([], float(self._encoder.get("texts", 0)))
            yield texts


def render(shards: Mapping[str, Any], encoder: Mapping[str, Any] | None) -> str:
    """This process's metrics followed by the shards' and the encoder's, in text format."""
    scraped = CollectorRegistry()
    scraped.register(_Snapshot(shards, encoder))
    return (generate_latest(REGISTRY) + generate_latest(scraped)).decode()
