"""What a shard is given: the ports it opens in its own process, as small Protocols.

The composition root (:mod:`serve.composition`) chooses the implementations; nothing in
``actors/`` imports ``serve/`` or names a storage backend.
"""

from __future__ import annotations

from typing import Protocol

from portrait.ports import (
    AsyncEncoder,
    Eraser,
    EventLog,
    ItemSpaceStore,
    SnapshotStore,
    TextFeatureStore,
)
from storage.catalog import ItemCatalog


class HostStores(Protocol):
    """The stores a user host needs."""

    events: EventLog
    snapshots: SnapshotStore
    text_features: TextFeatureStore
    eraser: Eraser

    async def close(self) -> None: ...


class StoreOpener(Protocol):
    """Opens the stores in the calling process (e.g. :class:`storage.stores.StoreFactory`)."""

    async def open(self) -> HostStores: ...


class PublisherStores(HostStores, Protocol):
    """What the retrain job needs besides the host's stores: item spaces and the catalog."""

    item_spaces: ItemSpaceStore

    def catalog(self, encoder: AsyncEncoder) -> ItemCatalog: ...


class StoresOpener(Protocol):
    """Opens the retrain job's stores in its own process."""

    async def open(self) -> PublisherStores: ...


class EncoderConnector(Protocol):
    """Connects to the text encoder from the calling process."""

    async def connect(self) -> AsyncEncoder: ...


class ConnectedEncoder:
    """An encoder already in this process, as an :class:`EncoderConnector`."""

    def __init__(self, encoder: AsyncEncoder) -> None:
        self._encoder = encoder

    async def connect(self) -> AsyncEncoder:
        return self._encoder
