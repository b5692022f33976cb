"""The user-host tests' adapters and helpers: every test that takes ``stores`` runs twice,
on the in-memory adapters and on the embedded Postgres, so the host is held to the same
behaviour on both."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.dependencies import ConnectedEncoder
from actors.host import HostSettings, UserHost
from actors.text_features import TextFeatureSource, ThreadedEncoder
from portrait.config import ProfileConfig
from portrait.events import Event, ItemViewed
from portrait.fold import replay
from portrait.items import ItemIndex
from portrait.ports import AsyncEncoder, EventLog, SnapshotStore, TextFeatureStore
from portrait.profile import ProfileState
from portrait.variants import VariantPolicy
from storage.memory import InMemoryEventLog, InMemorySnapshotStore
from storage.postgres import PostgresEventLog
from storage.postgres_snapshots import PostgresSnapshotStore
from storage.text_features import InMemoryTextFeatureStore, PostgresTextFeatureStore
from tests.fakes import HashingEncoder
from tests.unit.builders import MODEL, catalog

T0 = 1_600_000_000.0
CONFIG = ProfileConfig()
# The builders' model: the catalog's vectors are said to be this encoder's, as a host needs.
ENCODER = HashingEncoder(dim=16, model_id=MODEL)
ITEMS: ItemIndex = catalog(dim=16)


@dataclass
class Stores:
    """One backend's adapters, shared by every host a test builds (a restarted process
    sees the same database)."""

    log: EventLog
    snapshots: SnapshotStore
    text_cache: TextFeatureStore

    def texts(self, encoder: AsyncEncoder | None = None) -> TextFeatureSource:
        connector = ConnectedEncoder(encoder or ThreadedEncoder(ENCODER))
        return TextFeatureSource(self.text_cache, connector)


@pytest.fixture(params=["memory", "postgres"])
def stores(request: pytest.FixtureRequest) -> Stores:
    """The host's adapters: in memory, or on the embedded Postgres (tables emptied)."""
    if request.param == "memory":
        return Stores(InMemoryEventLog(), InMemorySnapshotStore(), InMemoryTextFeatureStore())
    # Requested only here, so the in-memory runs never start a Postgres server.
    engine: AsyncEngine = request.getfixturevalue("embedded_engine")
    return Stores(
        PostgresEventLog(engine), PostgresSnapshotStore(engine), PostgresTextFeatureStore(engine)
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_host(
    stores: Stores,
    clock: Callable[[], float] | None = None,
    *,
    log: EventLog | None = None,
    variants: VariantPolicy | None = None,
    texts: TextFeatureSource | None = None,
    **settings: Any,
) -> UserHost:
    return UserHost(
        log or stores.log, stores.snapshots, texts or stores.texts(), lambda: ITEMS,
        variants or VariantPolicy.single(CONFIG), HostSettings(**settings),
        clock=clock or Clock(),
    )


async def settle(host: UserHost) -> None:
    """Wait for the host's background snapshot writes (reaching into it: tests only)."""
    await host._snapshotter.drain()


def views(user: str, start: int, n: int) -> list[Event]:
    return [ItemViewed(f"{user}-e{i}", user, T0 + i, f"i{i % 30}") for i in range(start, start + n)]


async def fresh_replay(stores: Stores, user: str) -> ProfileState:
    events = await stores.log.read(user)
    texts = await TextFeatureSource(
        InMemoryTextFeatureStore(), ConnectedEncoder(ThreadedEncoder(ENCODER))
    ).features_for(r.event for r in events)
    return replay(events, CONFIG, ITEMS, texts.get(user, {}), user_id=user)
