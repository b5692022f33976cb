"""The encoder deployment's class (outside Serve: its batch body, called directly) serving
two encoder versions in one batch, and refusing a checkpoint its record lies about."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from encoding.encoder_checkpoint import CheckpointMismatch
from encoding.settings import EncoderSettings
from portrait.encoder_versions import EncoderVersion
from serve.encoder_deployment import EncoderDeployment
from tests.encoder_folders import perturbed_minilm
from tests.fakes import HashingEncoder


class Rotated(HashingEncoder):
    """Another space: the hashing encoder's vectors rolled by one column."""

    def encode(self, texts):  # type: ignore[no-untyped-def]
        return np.roll(super().encode(texts), 1, axis=1)


def factory(settings: EncoderSettings) -> HashingEncoder:
    if settings.model_path is None:
        return HashingEncoder(dim=384, model_id=settings.model_id)
    return Rotated(dim=384, model_id=settings.model_id)


def test_one_replica_serves_two_versions_and_refuses_a_lying_one(tmp_path: Path) -> None:
    record = perturbed_minilm(tmp_path / "tuned")
    version = EncoderVersion(1, record.name, record.model_id, record.base_model,
                             record.base_name, str(tmp_path / "tuned"), record.dim)
    replica = EncoderDeployment.func_or_class(EncoderSettings(), factory)  # type: ignore[attr-defined]
    texts = ["space opera", "a quiet romance"]
    # One batch of three callers' chunks, two versions mixed: rows come back in order.
    rows = replica._encode_versions([(None, texts), (version, texts), (None, texts[:1])])
    base = HashingEncoder(dim=384).encode(texts)
    np.testing.assert_allclose(np.stack(rows[:2]), base)
    np.testing.assert_allclose(np.stack(rows[2:4]), np.roll(base, 1, axis=1))
    np.testing.assert_allclose(rows[4], base[0])
    assert replica._engines.loaded() == [EncoderSettings().model_id, record.model_id]

    (tmp_path / "tuned" / "model.safetensors").write_bytes(b"edited")  # not what was recorded
    lying = dataclasses.replace(version, version=2, model_id=record.model_id + "-x")
    with pytest.raises(CheckpointMismatch):
        replica._encode_versions([(lying, texts)])
    assert replica._engines.loaded() == [EncoderSettings().model_id, record.model_id]
