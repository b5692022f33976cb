"""Engines of several encoder versions in one process: the base, and each fine-tuned version
loaded from its folder on first use, only after its record is checked against the folder.

A checkpoint whose width, tokenizer or weights differ from its record, or whose record names
another model id than the version asked for, is refused (:class:`CheckpointMismatch`) and
never loaded: vectors of another space under the version's id would mix silently with the
real ones. Used by the encoder deployment and by the ``portrait encoder`` commands.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from encoding.encoder_checkpoint import (
    CheckpointMismatch,
    read_record,
    settings_for,
    verify_checkpoint,
)
from encoding.settings import EncoderSettings
from portrait.encoder_versions import EncoderVersion
from portrait.ports import Encoder

EngineFactory = Callable[[EncoderSettings], Encoder]

# Fine-tuned engines kept loaded besides the base: the active one and the previous one (the
# one a migration or a rollback encodes with); older ones are dropped.
KEEP_VERSIONS = 2


class VersionEngines:
    """The base engine and lazily loaded version engines (thread-safe loading)."""

    def __init__(self, base: Encoder, base_settings: EncoderSettings,
                 factory: EngineFactory) -> None:
        self.base = base
        self._settings = base_settings
        self._factory = factory
        self._engines: OrderedDict[str, Encoder] = OrderedDict()
        self._lock = threading.Lock()

    def engine_for(self, version: EncoderVersion | None) -> Encoder:
        """The engine of ``version`` (None or the base's model id: the base)."""
        if version is None or version.model_id == self.base.model_id:
            return self.base
        with self._lock:
            engine = self._engines.get(version.model_id)
            if engine is None:
                engine = self._engines[version.model_id] = self._load(version)
                while len(self._engines) > KEEP_VERSIONS:
                    self._engines.popitem(last=False)
            self._engines.move_to_end(version.model_id)
            return engine

    def loaded(self) -> list[str]:
        return [self.base.model_id, *self._engines]

    def _load(self, version: EncoderVersion) -> Encoder:
        if not version.path:
            raise CheckpointMismatch(f"encoder version {version.name!r} has no folder")
        folder = Path(version.path)
        record = read_record(folder)
        if record.model_id != version.model_id:
            raise CheckpointMismatch(
                f"{folder}: its record names model {record.model_id!r}, the version "
                f"{version.name!r} is {version.model_id!r}")
        verify_checkpoint(folder, record)
        return self._factory(settings_for(folder, record, self._settings))


__all__ = ["KEEP_VERSIONS", "EngineFactory", "VersionEngines"]
