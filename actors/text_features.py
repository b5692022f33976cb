"""Text features of review and search events: cached, else encoded in one batch."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from actors.dependencies import EncoderConnector
from portrait.encoder_versions import EncoderVersion
from portrait.errors import EncoderUnavailable, PortraitError
from portrait.events import Event, event_text
from portrait.keywords import TextFeatureBatch
from portrait.ports import AsyncEncoder, Encoder, TextFeatures, TextFeatureStore, TextKey
from portrait.prompts import TextPrompts, prompts_of


class TextFeatureSource:
    """Supplies :class:`TextFeatures` for the fold, encoding only what the cache lacks.

    The encoder is connected when a text event first needs features (and again after a failed
    attempt), not before: a shard starts, and serves every user without text, while the
    encoder is down.

    Features are those of one encoder version, named per call or by ``version`` (a shard's:
    its catalog view's), never "whatever the encoder serves now": between a switch and the
    shard's next view, the shard keeps folding in its view's space.
    """

    def __init__(
        self, store: TextFeatureStore, connector: EncoderConnector,
        version: Callable[[], EncoderVersion | None] = lambda: None,
    ) -> None:
        self._store = store
        self._connector = connector
        self._version = version
        self._encoder: AsyncEncoder | None = None
        self.encoded = 0  # texts sent to the encoder, for metrics

    def version(self) -> EncoderVersion | None:
        """The encoder version this source encodes with now (its shard's view's)."""
        return self._version()

    async def _connected(self) -> AsyncEncoder:
        if self._encoder is None:
            try:
                self._encoder = await self._connector.connect()
            except PortraitError:
                raise
            except Exception as exc:  # the deployment is missing or not answering
                raise EncoderUnavailable(f"cannot reach the text encoder: {exc!r}") from exc
        return self._encoder

    async def features_for(
        self, events: Iterable[Event], version: EncoderVersion | None = None
    ) -> dict[str, dict[str, TextFeatures]]:
        """Features of every text event in ``events`` under ``version`` (default: this
        source's, else the encoder's own), by user and then event id (event ids are unique per
        user only, so one call's users may share one)."""
        texts = {(e.user_id, e.event_id): t for e in events
                 if (t := event_text(e)) is not None}
        if not texts:
            return {}
        keys = {k: TextKey(k[0], k[1], text_digest(t)) for k, t in texts.items()}
        encoder = await self._connected()
        version = version or self._version()
        model = encoder.model_id if version is None else version.model_id
        cached = await self._store.get_many(list(keys.values()), model)
        found = {k: cached[key] for k, key in keys.items() if key in cached}
        missing = [k for k in texts if k not in found]
        if missing:
            encoded = await encode_features(encoder, version, [texts[k] for k in missing])
            fresh = dict(zip(missing, encoded, strict=True))
            self.encoded += len(missing)
            await self._store.put_many({keys[k]: f for k, f in fresh.items()}, model)
            found.update(fresh)
        by_user: dict[str, dict[str, TextFeatures]] = {}
        for (user_id, event_id), features in found.items():
            by_user.setdefault(user_id, {})[event_id] = features
        return by_user


async def encode_features(
    encoder: AsyncEncoder, version: EncoderVersion | None, texts: Sequence[str]
) -> list[TextFeatures]:
    """The texts' features under ``version`` (None or the base: ``encoder``'s own model),
    with the query prompts of that version's model."""
    batch = TextFeatureBatch(texts)
    if version is None or version.model_id == encoder.model_id:
        vectors = await encoder.encode(prompts_of(encoder).queries(batch.inputs))
        model = encoder.model_id
    else:
        encode_for = getattr(encoder, "encode_for", None)
        if encode_for is None:
            raise EncoderUnavailable(f"the encoder serves {encoder.model_id!r} only, not "
                                     f"version {version.name!r}")
        vectors = await encode_for(version, version.prompts.queries(batch.inputs))
        model = version.model_id
    return batch.assemble(vectors, model)


def text_digest(text: str) -> str:
    """The digest of a text in its cache key (the Postgres cache keys it again with the user's
    data key, so it is never stored as is when encryption is on)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


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

    @property
    def prompts(self) -> TextPrompts:
        return prompts_of(self._encoder)

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        # Handed on as given: list() turned a bare string into its characters, which were
        # encoded one by one instead of refused (InvalidField 'texts') as the port says.
        return await asyncio.to_thread(self._encoder.encode, texts)
