"""One contract for every encoder adapter (``Encoder`` and ``AsyncEncoder`` in portrait.ports):
the vLLM encoder on the default model (MiniLM) and on multilingual-e5-small (skipped without
the ``multilingual`` extra), and ThreadedEncoder offering each of them to async callers.

The Serve deployment's client (serve.encoder_deployment.EncoderClient) is an AsyncEncoder too,
but it talks to a Serve handle, which needs a Ray cluster: the ray tier checks it
(tests/serve/test_encoder_deployment.py::test_client), not this Ray-free tier.

The engines come from tests/engine/conftest.py, one per model for this module.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pytest

from actors.text_features import ThreadedEncoder
from encoding.settings import DEFAULT_MODEL, MODELS, MULTILINGUAL_MODEL
from encoding.vllm_encoder import VllmEncoder
from portrait.errors import InvalidField
from portrait.ports import AsyncEncoder, Encoder
from portrait.prompts import prompts_of

TEXTS = [
    "a quiet drama about a lighthouse keeper",
    "space opera with starships and an evil empire",
    "a chef learns to cook Sichuan food in a small restaurant",
    "两个年轻人在巴黎相爱的浪漫故事",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "documentary",
]
# ~40,000 tokens on either model's tokenizer, far over any window (at most 8,192).
LONG_WORDS = [f"word{i % 97} topic{i % 13}" for i in range(5000)]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


class EncoderContract:
    """The tests every encoder adapter must pass; a subclass names the adapter, the port it
    offers (sync or async) and the model behind it, and gives it as ``subject``."""

    adapter: ClassVar[type]
    port: ClassVar[type]
    model: ClassVar[str]  # a key of encoding.settings.MODELS

    @pytest.fixture
    def encoder(self, subject: Any) -> Any:
        assert isinstance(subject, self.adapter)
        return subject

    @staticmethod
    async def encode(encoder: Any, texts: Sequence[str]) -> np.ndarray:
        """``encoder.encode(texts)``, awaited when the adapter is async."""
        out = encoder.encode(texts)
        return await out if inspect.isawaitable(out) else out

    async def test_offers_its_port(self, encoder: Any) -> None:
        assert isinstance(encoder, self.port)
        # The two Protocols differ only in whether encode is a coroutine.
        assert inspect.iscoroutinefunction(encoder.encode) == (self.port is AsyncEncoder)

    async def test_model_id_and_dim_are_the_models_and_stable(self, encoder: Any) -> None:
        spec = MODELS[self.model]
        assert (encoder.model_id, encoder.dim) == (spec.model_id, 384)
        got = await self.encode(encoder, TEXTS)
        assert got.shape[1] == encoder.dim
        assert (encoder.model_id, encoder.dim) == (spec.model_id, 384)

    async def test_one_normalised_float32_row_per_text_in_order(self, encoder: Any) -> None:
        got = await self.encode(encoder, TEXTS)
        assert got.dtype == np.float32 and got.shape == (len(TEXTS), encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        reversed_ = await self.encode(encoder, TEXTS[::-1])
        assert cosines(reversed_[::-1], got).min() > 0.999
        # Distinct texts give distinct rows: each row is nearest to itself in the other order.
        assert list(np.argmax(got @ reversed_[::-1].T, axis=1)) == list(range(len(TEXTS)))

    async def test_a_batch_equals_its_texts_one_at_a_time(self, encoder: Any) -> None:
        batch = await self.encode(encoder, TEXTS)
        singles = np.concatenate([await self.encode(encoder, [t]) for t in TEXTS])
        assert cosines(batch, singles).min() >= 0.99999  # measured 1.0 on every adapter

    async def test_the_same_text_gives_the_same_vector(self, encoder: Any) -> None:
        twice = await self.encode(encoder, [TEXTS[1], TEXTS[1]])
        again = await self.encode(encoder, [TEXTS[1]])
        np.testing.assert_allclose(twice[0], twice[1], atol=1e-6)
        np.testing.assert_allclose(twice[:1], again, atol=1e-6)

    async def test_no_texts_give_an_empty_matrix(self, encoder: Any) -> None:
        got = await self.encode(encoder, [])
        assert got.shape == (0, encoder.dim) and got.dtype == np.float32

    @pytest.mark.parametrize(
        "texts, field",
        [
            ([""], "texts[0]"),
            (["fine", "   "], "texts[1]"),
            (["fine", None], "texts[1]"),
            ("a bare string", "texts"),
        ],
    )
    async def test_invalid_texts_are_refused_by_name(
        self, encoder: Any, texts: Any, field: str
    ) -> None:
        with pytest.raises(InvalidField) as err:
            await self.encode(encoder, texts)
        assert err.value.field == field

    async def test_text_over_the_window_is_truncated_not_rejected(self, encoder: Any) -> None:
        got = await self.encode(encoder, [" ".join(LONG_WORDS), "a short one"])
        assert got.shape == (2, encoder.dim)
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
        # Truncation keeps the head: the text and its first 1,000 pairs (also far over the
        # window) give the same vector.
        head = await self.encode(encoder, [" ".join(LONG_WORDS[:1000])])
        assert float(cosines(got[:1], head)[0]) >= 0.9999

    async def test_prompts_are_the_models(self, encoder: Any) -> None:
        prompts = prompts_of(encoder)
        assert prompts == MODELS[self.model].prompts
        # Applied, they are what the model reads: a prefix changes the vector, none does not.
        bare, query, passage = await self.encode(
            encoder, [TEXTS[0], *prompts.queries(TEXTS[:1]), *prompts.passages(TEXTS[:1])])
        for prefix, vector in ((prompts.query, query), (prompts.passage, passage)):
            same = float(cosines(bare[None], vector[None])[0]) > 0.99999
            assert same == (prefix == ""), (prefix, vector)


class TestVllmMiniLM(EncoderContract):
    adapter = VllmEncoder
    port = Encoder
    model = DEFAULT_MODEL

    @pytest.fixture
    def subject(self, minilm: VllmEncoder) -> VllmEncoder:
        return minilm


class TestVllmE5(EncoderContract):
    adapter = VllmEncoder
    port = Encoder
    model = MULTILINGUAL_MODEL

    @pytest.fixture
    def subject(self, e5: VllmEncoder) -> VllmEncoder:
        return e5


class TestThreadedMiniLM(EncoderContract):
    adapter = ThreadedEncoder
    port = AsyncEncoder
    model = DEFAULT_MODEL

    @pytest.fixture
    def subject(self, minilm: VllmEncoder) -> ThreadedEncoder:
        return ThreadedEncoder(minilm)


class TestThreadedE5(EncoderContract):
    adapter = ThreadedEncoder
    port = AsyncEncoder
    model = MULTILINGUAL_MODEL

    @pytest.fixture
    def subject(self, e5: VllmEncoder) -> ThreadedEncoder:
        return ThreadedEncoder(e5)
