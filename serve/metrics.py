"""Every Prometheus metric family Portrait declares, in one place.

Request-path and encoder metrics live in the process that does the work (prometheus_client's
default registry): the ingress process for the HTTP metrics, the encoder replica for the
encoder's. The shards run in other processes; at scrape time the ingress fetches their
counters (and the encoder's) and writes them out as metric families labelled by ``shard``,
so one scrape of ``/metrics`` sees the whole service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

# -- the text encoder (in the encoder replica) --------------------------------------------
REQUESTS = Counter(
    "portrait_encoder_requests",  # exported as portrait_encoder_requests_total
    "Encode requests (one per encode() call), by outcome: ok, invalid, error.",
    ["outcome"],
)
BATCH_SIZE = Histogram(
    "portrait_encoder_batch_size",
    "Texts per engine call made by the batcher.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
LATENCY = Histogram(
    "portrait_encoder_latency_seconds",
    "Seconds from an encode() call's arrival to its vectors, queueing included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUEUE_DEPTH = Gauge(
    "portrait_encoder_queue_depth",
    "Texts accepted by the encoder and not yet encoded (queued or in the running batch).",
)

for _outcome in ("ok", "invalid", "error"):
    REQUESTS.labels(outcome=_outcome)

# -- profile summaries (in the ingress process; serve/summary_service.py) ------------------
SUMMARIES = Counter(
    "portrait_summaries",
    "GET /v1/users/{id}/summary answers, by source: model, template.",
    ["source"],
)
SUMMARY_FALLBACKS = Counter(
    "portrait_summary_fallbacks",
    "Summaries answered by the template although the model is on, by reason: ungrounded "
    "(it named an interest the profile lacks), unsupported (a name, number or gender no fact "
    "supports), loops, empty, timeout, unavailable.",
    ["reason"],
)
SUMMARY_LATENCY = Histogram(
    "portrait_summary_generation_seconds",
    "Seconds the summary model took for one summary, batching and queueing included.",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0),
)
for _source in ("model", "template"):
    SUMMARIES.labels(source=_source)
for _reason in ("ungrounded", "unsupported", "loops", "empty", "timeout", "unavailable"):
    SUMMARY_FALLBACKS.labels(reason=_reason)

# -- the HTTP API (in the ingress process) ------------------------------------------------

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

INGESTED = Counter("portrait_ingested_events", "Events accepted by POST /v1/events.")
ERASURES = Counter("portrait_user_erasures", "Users erased through DELETE /v1/users/{id}.")
INGEST_LATENCY = Histogram(
    "portrait_ingest_latency_seconds",
    "POST /v1/events: validation, durable append and fold, per request.",
    buckets=_LATENCY_BUCKETS,
)
ERRORS = Counter(
    "portrait_api_errors",  # exported as portrait_api_errors_total
    "Error answers of the HTTP API (whole requests, and refused users' batches inside a "
    "POST /v1/events), by status and error type.",
    ["status", "error"],
)
RECOMMEND_LATENCY = Histogram(
    "portrait_recommendation_latency_seconds",
    "GET recommendations, per request, by A/B variant ('default' without an experiment).",
    ["variant"],
    buckets=_LATENCY_BUCKETS,
)

# -- online experiments (in the ingress process; serve/impression_recorder.py) ---------------------
IMPRESSIONS = Counter(
    "portrait_impressions",
    "Recommendation lists served and queued for recording, by variant ('interleave' under "
    "interleaving).",
    ["variant"],
)
IMPRESSIONS_DROPPED = Counter(
    "portrait_impressions_dropped",
    "Impressions not recorded because the recorder's buffer was full (the store was away).",
)
IMPRESSION_FLUSH_FAILURES = Counter(
    "portrait_impression_flush_failures",
    "Impression batches the store refused (kept buffered and retried).",
)
ATTRIBUTED = Counter(
    "portrait_attributed_actions",
    "Ingested item events attributed to a list this replica served, by variant (the "
    "contributing team under interleaving) and event type.",
    ["variant", "action"],
)
ATTRIBUTION_IGNORED = Counter(
    "portrait_attribution_ignored",
    "Events whose request_id was not honoured: unknown (to this replica), foreign (another "
    "user's list), not_displayed (the item was not in it). The events themselves are kept.",
    ["reason"],
)

# shard stats key -> (metric name, help, kind)
_SHARD_METRICS = {
    "ingested": (
        "portrait_shard_appended_events_total",
        "Events durably appended and folded.",
        "counter",
    ),
    "duplicates": (
        "portrait_shard_duplicate_events_total",
        "Re-sent event_ids answered from the log.",
        "counter",
    ),
    "commits": (
        "portrait_shard_append_transactions_total",
        "Group-commit transactions.",
        "counter",
    ),
    "conflicts": (
        "portrait_shard_version_conflicts_total",
        "Appends refused because another writer had moved the user's stream (re-read, retried).",
        "counter",
    ),
    "storage_retries": (
        "portrait_storage_retries_total",
        "Transient storage failures retried (connection lost, timeout, serialization).",
        "counter",
    ),
    "storage_unavailable": (
        "portrait_storage_unavailable_total",
        "Storage operations that failed on every attempt (answered 503).",
        "counter",
    ),
    "storage_failures": (
        "portrait_storage_failures_total",
        "Non-transient storage failures (a bug or a broken schema; logged once each).",
        "counter",
    ),
    "pending_events": (
        "portrait_shard_pending_events",
        "Events waiting for their group commit (queued or being written).",
        "gauge",
    ),
    "calls_in_flight": (
        "portrait_shard_calls_in_flight",
        "Calls the shard has accepted and not answered (its queue depth).",
        "gauge",
    ),
    "activations": (
        "portrait_user_activations_total",
        "Users loaded (snapshot + replay).",
        "counter",
    ),
    "replayed_events": (
        "portrait_replayed_events_total",
        "Events replayed on activation or time travel.",
        "counter",
    ),
    "activation_seconds": (
        "portrait_activation_seconds_total",
        "Time spent activating users.",
        "counter",
    ),
    "passivations": ("portrait_user_passivations_total", "Users dropped from memory.", "counter"),
    "snapshots": ("portrait_snapshots_total", "Snapshots written.", "counter"),
    "snapshots_unreadable": (
        "portrait_unreadable_snapshots_total",
        "Stored snapshots that did not decode (replayed from the log instead).",
        "counter",
    ),
    "events_unfoldable": (
        "portrait_unfoldable_events_total",
        "Logged events skipped on replay because they could not be folded (see the log).",
        "counter",
    ),
    "recommendations": (
        "portrait_shard_recommendations_total",
        "Recommendations computed.",
        "counter",
    ),
    "recommendation_seconds": (
        "portrait_shard_recommendation_seconds_total",
        "Time spent ranking.",
        "counter",
    ),
    "handed_off": (
        "portrait_shard_handed_off_users_total",
        "Active users passed to another shard when the shard count changed.",
        "counter",
    ),
    "topology_epoch": (
        "portrait_shard_topology_epoch",
        "The shard-set epoch this shard works under (each resize is a new one).",
        "gauge",
    ),
    "erasures": ("portrait_shard_erasures_total", "Users erased on this shard.", "counter"),
    "active_users": ("portrait_active_users", "Users held in memory.", "gauge"),
    "active_bytes": ("portrait_active_user_bytes", "Approximate memory of active users.", "gauge"),
}


# retrain stats key -> (metric name, help, kind)
_RETRAIN_METRICS = {
    "version": (
        "portrait_item_space_version",
        "Collaborative item space in use (0 = none yet).",
        "gauge",
    ),
    "retrains": (
        "portrait_item_space_retrains_total",
        "Item spaces trained and published.",
        "counter",
    ),
    "failures": (
        "portrait_item_space_retrain_failures_total",
        "Retrains that failed (the previous space stayed).",
        "counter",
    ),
    "skipped": (
        "portrait_item_space_retrains_skipped_total",
        "Retrains skipped for too little data.",
        "counter",
    ),
    "last_seconds": (
        "portrait_item_space_last_retrain_seconds",
        "Duration of the last successful retrain.",
        "gauge",
    ),
    "new_events": (
        "portrait_item_space_new_events",
        "Events recorded since the last retrain started.",
        "gauge",
    ),
}


class _Snapshot(Collector):
    def __init__(
        self,
        shards: Mapping[str, Any],
        encoder: Mapping[str, Any] | None,
        retrain: Mapping[str, Any] | None,
    ) -> None:
        self._shards, self._encoder, self._retrain = shards, encoder, retrain

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "portrait_shard_up", "1 if the shard answered the scrape.", labels=["shard"]
        )
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
        for key, (metric, help_text, kind) in _RETRAIN_METRICS.items():
            if self._retrain and key in self._retrain:
                fam: CounterMetricFamily | GaugeMetricFamily
                if kind == "counter":
                    fam = CounterMetricFamily(metric[: -len("_total")], help_text)
                else:
                    fam = GaugeMetricFamily(metric, help_text)
                fam.add_metric([], float(self._retrain[key]))
                yield fam
        if self._encoder:
            calls = CounterMetricFamily("portrait_encoder_batches", "Engine calls by the batcher.")
            calls.add_metric([], float(self._encoder.get("batches", 0)))
            yield calls
            texts = CounterMetricFamily("portrait_encoder_texts", "Texts encoded.")
            texts.add_metric([], float(self._encoder.get("texts", 0)))
            yield texts
            held = GaugeMetricFamily(
                "portrait_encoder_texts_in_flight",
                "Texts queued or being encoded in the replica asked (what autoscaling sizes by).")
            held.add_metric([], float(self._encoder.get("texts_in_flight", 0)))
            yield held


def render(
    shards: Mapping[str, Any],
    encoder: Mapping[str, Any] | None,
    retrain: Mapping[str, Any] | None = None,
) -> str:
    """This process's metrics followed by the shards' and the encoder's, in text format."""
    scraped = CollectorRegistry()
    scraped.register(_Snapshot(shards, encoder, retrain))
    return (generate_latest(REGISTRY) + generate_latest(scraped)).decode()
