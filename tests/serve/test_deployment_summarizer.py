"""The PortraitSummarizer Serve deployment on a local Ray cluster, with a stand-in engine:
concurrent callers share engine batches and each gets its own text back, through the
ingress's client. (The real engine: tests/engine/test_summarizer.py.)"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from serve.summarizer import SummarizerSettings  # noqa: E402
from serve.summarizer_deployment import PortraitSummarizer, ServeSummarizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
APP = "portrait-summarizer-test"


class EchoEngine:
    """Answers each chat with its content and the size of the batch it came in."""

    model_id = "test/echo"
    load_seconds = 0.0
    convert_seconds = 0.0

    def generate(self, chats: list[list[dict[str, str]]]) -> list[str]:
        return [f"{c[0]['content']} (batch of {len(chats)})" for c in chats]


def echo_engine(settings: SummarizerSettings, data_dir: Path) -> Any:
    return EchoEngine()


@pytest.fixture(scope="module")
def handle():
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The stand-in engine travels by value: the replica cannot import a test module (tests/serve
    # is no package).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        serve.start(proxy_location="Disabled")
        settings = SummarizerSettings(enabled=True, max_batch_size=8, batch_wait_timeout_s=0.2)
        app = PortraitSummarizer.options(  # type: ignore[attr-defined]
            max_ongoing_requests=64, ray_actor_options={"num_cpus": 0},
        ).bind(settings, "/nonexistent", echo_engine)
        yield serve.run(app, name=APP, route_prefix=None)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            if saved is None:
                os.environ.pop("RAY_AUTH_MODE", None)


async def test_concurrent_callers_share_batches(handle) -> None:
    client = ServeSummarizer(handle)
    assert await client.model_id() == "test/echo"
    texts = await asyncio.gather(*(
        client.generate([{"role": "user", "content": f"user {i}"}]) for i in range(8)))
    # Each caller gets its own answer back, in order...
    assert [t.split(" (")[0] for t in texts] == [f"user {i}" for i in range(8)]
    # ...and they were generated together, not one by one.
    sizes = [int(t.rsplit("batch of ", 1)[1].rstrip(")")) for t in texts]
    assert max(sizes) > 1, sizes
    stats = await handle.stats.remote()
    assert sum(n * count for n, count in stats["batch_sizes"].items()) == 8
