"""Prometheus metrics of the text encoder (prometheus_client, default registry).

They live in the process that serves the encoder (a Ray Serve replica, or the API process
when the encoder runs in-process) and are exported by that process's ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
