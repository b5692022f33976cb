"""A test encoder that encodes with any encoder version (:class:`VersionedHashing`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.text_features import ThreadedEncoder
from portrait.encoder_versions import EncoderVersion
from tests.fakes import HashingEncoder

BASE_MODEL = "test/hashing-encoder"


class Killed(Exception):
    """What the test's encoder raises to stop a migration midway."""


class VersionedHashing(ThreadedEncoder):
    """The base hashing encoder, and any version as another hashing encoder whose vectors
    are rotated by the version (a different space); counts what each model encoded, and can
    be told to fail after some calls (a migration killed midway)."""

    def __init__(self, dim: int = 16, base_model: str = BASE_MODEL) -> None:
        super().__init__(HashingEncoder(dim=dim, model_id=base_model))
        self.texts: dict[str, list[str]] = {}
        self.fail_after: int | None = None

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.texts.setdefault(self.model_id, []).extend(texts)
        return await super().encode(texts)

    async def encode_for(self, version: EncoderVersion, texts: Sequence[str]) -> np.ndarray:
        if self.fail_after is not None:
            if self.fail_after == 0:
                raise Killed("the migration was killed")
            self.fail_after -= 1
        self.texts.setdefault(version.model_id, []).extend(texts)
        vectors = await super().encode(texts)
        return np.roll(vectors, 1 + version.version, axis=1)
