"""Text features of review and search events: cached, else encoded in one batch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from actors.dependencies import EncoderConnector
from portrait.errors import EncoderUnavailable, PortraitError
from portrait.events import Event, event_text
from portrait.keywords import TextFeatureBatch
from portrait.ports import AsyncEncoder, Encoder, TextFeatures, TextFeatureStore


class TextFeatureSource:
    """Supplies :class:`TextFeatures` for the fold, encoding only what the cache lacks.

    The encoder is connected when a text event first needs features (and again after a failed
    attempt), not before: a shard starts, and serves every user without text, while the
    encoder is down.
    """

    def __init__(self, store: TextFeatureStore, connector: EncoderConnector) -> None:
        self._store = store
        self._connector = connector
        self._encoder: AsyncEncoder | None = None
        self.encoded = 0  # texts sent to the encoder, for metrics

    async def _connected(self) -> AsyncEncoder:
        if self._encoder is None:
            try:
                self._encoder = await self._connector.connect()
            except PortraitError:
                raise
            except Exception as exc:  # the deployment is missing or not answering
                raise EncoderUnavailable(f"cannot reach the text encoder: {exc!r}") from exc
        return self._encoder

    async def features_for(self, events: Iterable[Event]) -> Mapping[str, TextFeatures]:
        """Features keyed by event_id for every text event in ``events``.

        The cache holds them under the event id *and* a digest of the text: features are
        encoded before the append, so those of an event the log then refused stay cached, and
        keyed by the id alone a later, different event reusing that id would inherit them.
        """
        texts = {e.event_id: t for e in events if (t := event_text(e)) is not None}
        if not texts:
            return {}
        keys = {eid: cache_key(eid, text) for eid, text in texts.items()}
        encoder = await self._connected()
        model = encoder.model_id
        cached = await self._store.get_many(list(keys.values()), model)
        found = {eid: cached[key] for eid, key in keys.items() if key in cached}
        missing = [eid for eid in texts if eid not in found]
        if missing:
            batch = TextFeatureBatch([texts[eid] for eid in missing])
            vectors = await encoder.encode(batch.inputs)
            fresh = dict(zip(missing, batch.assemble(vectors), strict=True))
            self.encoded += len(missing)
            await self._store.put_many({keys[eid]: f for eid, f in fresh.items()}, model)
            found = {**found, **fresh}
        return found


def cache_key(event_id: str, text: str) -> str:
    """Where a text event's features are cached: its id plus a digest of its text."""
    return f"{event_id}#{hashlib.sha256(text.encode()).hexdigest()[:16]}"


class ThreadedEncoder:
    """A synchronous :class:`Encoder` offered as an :class:`AsyncEncoder` (worker thread)."""

    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder

    @property
    def model_id(self) -> str:
        return self._encoder.model_id

    @property
    def dim(self) -> int:
        return self._encoder.dim

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return await asyncio.to_thread(self._encoder.encode, list(texts))
