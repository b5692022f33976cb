"""Serve autoscaling of the encoder on texts in flight, not on calls.

Serve's default policy counts a replica's ongoing *calls*. A shard sends all of a commit's
texts in one call, so with two shards the encoder never sees more than a few calls however
many texts wait: the count cannot reach a target and the encoder never scaled up
(``./dev bench encoder_autoscale`` before this policy: one replica for the whole load).
Each replica therefore reports the texts it holds (queued in its batcher or being encoded)
through ``record_autoscaling_stats``, and this policy sizes the deployment so that each
replica holds about ``target_ongoing_requests`` texts. Serve wraps the policy with the
deployment's bounds and up/down-scale delays.

The controller unpickles this function by value, so the module imports nothing of ours.
"""

from __future__ import annotations

from typing import Any

TEXTS_IN_FLIGHT = "texts_in_flight"
POLICY = "serve.encoder_autoscaling:texts_in_flight_policy"


def texts_in_flight_policy(ctx: Any) -> tuple[float, dict[str, Any]]:
    """Replicas wanted for the texts the running replicas hold (a ``ray.serve.config.
    AutoscalingContext``); the current target while no replica has reported yet."""
    reported = (ctx.aggregated_metrics or {}).get(TEXTS_IN_FLIGHT) or {}
    if not reported:
        return ctx.target_num_replicas, {}
    texts = float(sum(reported.values()))
    return texts / float(ctx.config.get_target_ongoing_requests()), {}


__all__ = ["POLICY", "TEXTS_IN_FLIGHT", "texts_in_flight_policy"]
