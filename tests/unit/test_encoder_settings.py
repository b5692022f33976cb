"""EncoderSettings (the settings' ``encoder`` section) and the HashingEncoder test double
(no vLLM, no Ray)."""

from __future__ import annotations

import numpy as np
import pytest

from encoding.engine import bound_cpu_count
from encoding.settings import EncoderSettings
from portrait.errors import InvalidField
from portrait.ports import Encoder
from serve.encoder_deployment import replica_options
from serve.settings import SettingsError, load_settings
from tests.fakes import HashingEncoder

# load_settings puts the encoder's cache under the data dir.
DEFAULTS = EncoderSettings(cache_dir=".portrait/models")


def encoder_from(env: dict[str, str]) -> EncoderSettings:
    return load_settings(env).encoder


def test_defaults() -> None:
    s = EncoderSettings()
    assert s.model_path is None
    assert s.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert s.dtype == "float32" and s.max_length == 256
    assert (s.max_batch_size, s.batch_wait_timeout_s, s.max_ongoing_requests) == (64, 0.005, 512)
    assert (s.num_gpus, s.num_replicas) == (0.0, 1)
    assert s.resolved_enforce_eager(cuda=False) is True
    assert s.resolved_enforce_eager(cuda=True) is False
    assert s.batch_config() == {"max_batch_size": 64, "batch_wait_timeout_s": 0.005}


def test_from_env_reads_prefixed_variables() -> None:
    s = encoder_from(
        {
            "PORTRAIT_ENCODER_MODEL_PATH": "/models/minilm",
            "PORTRAIT_ENCODER_MODEL_ID": "acme/minilm",
            "PORTRAIT_ENCODER_DTYPE": "auto-cpu",
            "PORTRAIT_ENCODER_MAX_LENGTH": "128",
            "PORTRAIT_ENCODER_ENFORCE_EAGER": "false",
            "PORTRAIT_ENCODER_MAX_BATCH_SIZE": "32",
            "PORTRAIT_ENCODER_BATCH_WAIT_TIMEOUT_S": "0.01",
            "PORTRAIT_ENCODER_MAX_ONGOING_REQUESTS": "256",
            "PORTRAIT_ENCODER_NUM_GPUS": "1",
            "PORTRAIT_ENCODER_NUM_REPLICAS": "2",
            "PORTRAIT_ENCODER_DTYPEX": "ignored",
            "OTHER": "ignored",
        }
    )
    assert s == EncoderSettings(
        model_path="/models/minilm", model_id="acme/minilm", dtype="auto-cpu", max_length=128,
        enforce_eager=False, max_batch_size=32, batch_wait_timeout_s=0.01,
        max_ongoing_requests=256, num_gpus=1.0, num_replicas=2, cache_dir=".portrait/models",
    )
    assert encoder_from({}) == DEFAULTS
    assert encoder_from({"PORTRAIT_ENCODER_DTYPE": ""}) == DEFAULTS


@pytest.mark.parametrize(
    "var, value",
    [
        ("PORTRAIT_ENCODER_DTYPE", "float16"),
        ("PORTRAIT_ENCODER_DTYPE", "auto"),
        ("PORTRAIT_ENCODER_MAX_LENGTH", "lots"),
        ("PORTRAIT_ENCODER_MAX_LENGTH", "2"),
        ("PORTRAIT_ENCODER_MAX_BATCH_SIZE", "0"),
        ("PORTRAIT_ENCODER_MAX_BATCH_SIZE", "1024"),  # > max_ongoing_requests (512)
        ("PORTRAIT_ENCODER_BATCH_WAIT_TIMEOUT_S", "-1"),
        ("PORTRAIT_ENCODER_BATCH_WAIT_TIMEOUT_S", "nan"),
        ("PORTRAIT_ENCODER_GPU_MEMORY_UTILIZATION", "1.0"),
        ("PORTRAIT_ENCODER_ENFORCE_EAGER", "maybe"),
        ("PORTRAIT_ENCODER_NUM_REPLICAS", "0"),
        ("PORTRAIT_ENCODER_NUM_GPUS", "-1"),
    ],
)
def test_from_env_names_the_bad_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError) as err:
        encoder_from({var: value})
    assert var in str(err.value)


def test_resolved_dtype() -> None:
    assert EncoderSettings(dtype="bfloat16").resolved_dtype(cuda=False) == "bfloat16"
    assert EncoderSettings(dtype="float32").resolved_dtype(cuda=False) == "float32"
    assert EncoderSettings(dtype="auto-cpu").resolved_dtype(cuda=False) in ("float32", "bfloat16")


def test_hashing_encoder_is_an_encoder() -> None:
    enc = HashingEncoder(dim=32)
    assert isinstance(enc, Encoder)
    vecs = enc.encode(["red apple pie", "apple pie", "quantum chromodynamics", "Red APPLE pie!"])
    assert vecs.shape == (4, 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-6)
    assert vecs[0] @ vecs[1] > vecs[0] @ vecs[2]
    np.testing.assert_array_equal(vecs[0], vecs[3])  # case and punctuation ignored
    np.testing.assert_array_equal(enc.encode(["apple pie"])[0], vecs[1])  # deterministic
    assert enc.encode(["!!!"]).shape == (1, 32)  # no words: still a unit vector
    long = enc.encode([" ".join(["apple"] * 300 + ["zebra"] * 10)])
    np.testing.assert_array_equal(long, enc.encode(["apple"]))  # truncated at 256 words


def test_hashing_encoder_rejects_empty_text() -> None:
    with pytest.raises(InvalidField) as err:
        HashingEncoder().encode(["ok", " "])
    assert err.value.field == "texts[1]"


@pytest.mark.parametrize(
    ("bind", "count"),
    [("0-1", 2), ("0,1", 2), ("3", 1), ("0-3,8,10-11", 7), ("0-1,1", 2),
     ("auto", None), ("nobind", None), ("0-3|4-7", None), ("", None), ("0-x", None)],
)
def test_bound_cpu_count(bind: str, count: int | None) -> None:
    assert bound_cpu_count(bind) == count


def test_replicas_are_fixed_unless_a_maximum_asks_for_autoscaling() -> None:
    assert replica_options(EncoderSettings(num_replicas=2)) == {"num_replicas": 2}
    scaled = replica_options(EncoderSettings(num_replicas=1, max_replicas=3))
    config = scaled["autoscaling_config"]
    assert isinstance(config, dict) and "num_replicas" not in scaled
    assert (config["min_replicas"], config["max_replicas"]) == (1, 3)
    assert config["target_ongoing_requests"] == 128
    # ... counted in texts by our policy, not in calls by Serve's default one
    policy = "serve.encoder_autoscaling:texts_in_flight_policy"
    assert config["policy"] == {"policy_function": policy}
    env = {"PORTRAIT_ENCODER_MAX_REPLICAS": "4", "PORTRAIT_ENCODER_TARGET_ONGOING_REQUESTS": "64"}
    from_env = replica_options(encoder_from(env))["autoscaling_config"]
    assert isinstance(from_env, dict) and from_env["max_replicas"] == 4
    with pytest.raises(SettingsError, match="^PORTRAIT_ENCODER_MAX_REPLICAS"):
        encoder_from({"PORTRAIT_ENCODER_NUM_REPLICAS": "3", "PORTRAIT_ENCODER_MAX_REPLICAS": "2"})
