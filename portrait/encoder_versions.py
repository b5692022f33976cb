"""Text encoder versions: which encoder made a vector, and the switch from one to another.

A new encoder changes the text space: item vectors, cached event-text features and every
profile's text accumulators belong to the encoder that made them, and vectors of two encoders
never meet (:class:`portrait.errors.MixedTextSpaces`). The shipped encoder is version 0,
"the base"; fine-tuned ones are registered with a version number, a unique name and a unique
model id (the id every vector and cached feature they make is stored under). Switching
re-encodes the catalog and the cached texts under the new version while the old one keeps
serving, then flips the active version in one transaction (see :mod:`actors.encoder_switch`).

Nothing here does I/O: the stores are :mod:`storage.encoder_versions`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from portrait.catalog import ItemRecord, item_text
from portrait.prompts import TextPrompts

BASE_VERSION = 0
State = Literal["registered", "migrating", "ready", "active", "retired"]
STATES: tuple[str, ...] = ("registered", "migrating", "ready", "active", "retired")


@dataclass(frozen=True)
class EncoderVersion:
    """One text encoder the service may rank with.

    Attributes:
        version: its number; :data:`BASE_VERSION` for the shipped encoder.
        name: the operator's name for it (unique).
        model_id: what its vectors and cached features are stored under (unique).
        base_model, base_name: the model it was fine-tuned from, and that model's key in
            :data:`encoding.settings.MODELS` (its prompts); the base names itself.
        path: its checkpoint folder (None for the base, which the settings locate).
        dim: the width of its vectors.
        state: registered -> migrating -> ready -> active; the previous active one goes back
            to ready (its vectors are kept for a rollback); retired drops them.
        record: the checkpoint's record (:class:`encoding.encoder_checkpoint.EncoderRecord`).
        prompts: the role prefixes of its base model (applied by the caller).
    """

    version: int
    name: str
    model_id: str
    base_model: str
    base_name: str
    path: str | None
    dim: int
    state: str = "registered"
    created_at: float = 0.0
    activated_at: float | None = None
    record: Mapping[str, Any] = field(default_factory=dict)
    prompts: TextPrompts = field(default_factory=TextPrompts)

    @property
    def is_base(self) -> bool:
        return self.version == BASE_VERSION


@dataclass(frozen=True)
class ActiveEncoder:
    """The pointer: the active version's number and the one a rollback returns to."""

    version: int = BASE_VERSION
    previous: int | None = None
    switched_at: float | None = None


class VersionedEncoder(Protocol):
    """Encodes with a named encoder version (loading it on first use)."""

    async def encode_for(self, version: EncoderVersion, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), version.dim)`` float32, L2-normalised, in order."""
        ...


class EncoderVersionStore(Protocol):
    """Registered encoders, the active pointer and item vectors per encoder
    (:mod:`storage.encoder_versions`)."""

    async def register(self, version: EncoderVersion) -> EncoderVersion:
        """Store a new version as 'registered' (InvalidField for a taken name or model id)."""
        ...

    async def all_versions(self) -> list[EncoderVersion]: ...
    async def get(self, version: int) -> EncoderVersion | None: ...
    async def by_name(self, name: str) -> EncoderVersion | None: ...
    async def active(self) -> ActiveEncoder: ...
    async def set_state(self, version: int, state: str) -> None: ...
    async def item_records(self) -> list[ItemRecord]: ...

    async def item_digests(self, model_id: str) -> dict[str, str]:
        """item id -> the digest of the text its vector under ``model_id`` was made from."""
        ...

    async def put_item_vectors(
        self, model_id: str, vectors: Sequence[tuple[str, np.ndarray, str]]
    ) -> None: ...

    async def drop_item_vectors(self, model_id: str) -> int: ...

    async def switch(self, to: EncoderVersion, now: float) -> ActiveEncoder:
        """Copy ``to``'s item vectors into the catalog and make it active, in one
        transaction; raises ``StaleItems`` (changing nothing) if an item lacks a current
        vector under it."""
        ...


@dataclass(frozen=True)
class SwitchPlan:
    """What a migration to a version still has to encode: items whose vector under it is
    missing or was made from another text, and text events not cached under it."""

    items: list[ItemRecord]
    items_total: int


def text_digest(text: str) -> str:
    """The digest a stored vector records of the text it was made from."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def items_to_encode(records: Sequence[ItemRecord], have: Mapping[str, str]) -> SwitchPlan:
    """The records whose vector under the target is missing or stale (``have``: item id ->
    the digest of the encoder text its stored vector was made from). Rerunning a migration
    therefore resumes where it stopped, and an item changed meanwhile is encoded again."""
    todo = [r for r in records if have.get(r.item_id) != text_digest(item_text(r))]
    return SwitchPlan(todo, len(records))


__all__ = [
    "BASE_VERSION", "STATES", "ActiveEncoder", "EncoderVersion", "EncoderVersionStore", "State",
    "SwitchPlan",
    "VersionedEncoder", "items_to_encode", "text_digest",
]
