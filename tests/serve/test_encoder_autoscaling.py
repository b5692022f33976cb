"""Serve scales the encoder on the texts waiting in it, not on the calls that carry them.

A shard sends a whole commit's texts in one call, so a handful of calls can hold hundreds of
texts. Here four callers keep 64 texts each in flight against a slow deterministic encoder:
four calls against a target of 8 per replica would never scale (Serve's default policy), 256
texts do. The replica count must reach the maximum under the load and fall back after it.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from encoding.settings import EncoderSettings  # noqa: E402
from serve.encoder_deployment import EncoderDeployment, replica_options  # noqa: E402
from tests.fakes import slow_encoder_factory  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = "portrait-encoder-autoscaling-test"
DEPLOYMENT = "EncoderDeployment"


@pytest.fixture(scope="module")
def cluster():
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        serve.start(proxy_location="Disabled")
        yield
    finally:
        # The cluster is this module's own: stopping Ray ends Serve with it (serve.shutdown()
        # first spent ~30 s on the replicas' graceful stop).
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)


def running_replicas() -> int:
    status = serve.status().applications[APP].deployments[DEPLOYMENT]
    return int(status.replica_states.get("RUNNING", 0))


async def wait_for_replicas(n: int, timeout_s: float) -> float | None:
    """Seconds until ``n`` replicas run, or None after ``timeout_s``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if running_replicas() == n:
            return time.monotonic() - started
        await asyncio.sleep(0.25)
    return None


async def test_the_encoder_scales_up_on_texts_in_flight_and_back_down(cluster) -> None:
    settings = EncoderSettings(num_cpus=0.5, num_replicas=1, max_replicas=2,
                               target_ongoing_requests=8, downscale_delay_s=2.0)
    autoscaling = dict(replica_options(settings)["autoscaling_config"])  # the shipped policy
    autoscaling.update(upscale_delay_s=1.0, look_back_period_s=2.0, metrics_interval_s=0.5)
    # (the delays and window above are quicker than production's)
    app = EncoderDeployment.options(  # type: ignore[attr-defined]
        autoscaling_config=autoscaling,
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options={"num_cpus": settings.num_cpus},
        user_config=settings.batch_config(),
    ).bind(settings, slow_encoder_factory)
    handle = serve.run(app, name=APP, route_prefix=None)
    assert running_replicas() == 1

    stop = asyncio.Event()

    async def caller(k: int) -> int:
        sent = 0
        while not stop.is_set():
            texts = [f"caller {k} call {sent} text {j}" for j in range(64)]
            out = await handle.encode.remote(texts)
            assert out.shape[0] == 64
            sent += 1
        return sent

    callers = [asyncio.create_task(caller(k)) for k in range(4)]
    try:
        up = await wait_for_replicas(2, timeout_s=60)
    finally:
        stop.set()
        calls = await asyncio.gather(*callers)
    assert up is not None, "four calls of 64 texts against 8 texts per replica did not scale"
    assert sum(calls) > 0
    down = await wait_for_replicas(1, timeout_s=60)
    assert down is not None, "the encoder did not scale back down after the load"
