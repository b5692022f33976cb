"""Opening Portrait's stores by URL: the one switch between the Postgres and memory adapters.

``postgresql://…`` opens the Postgres adapters on one connection pool; ``memory://NAME``
opens the in-memory adapters, shared by every caller of the same URL in this process (so the
in-process system's ingress and shards see one store; there is nothing to share across
processes, which is why the Ray system refuses ``memory://``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.engine import make_url

from portrait.encoder_versions import EncoderVersionStore
from portrait.ports import (
    AsyncEncoder,
    CatalogStore,
    Eraser,
    EventLog,
    ImpressionStore,
    ItemSpaceStore,
    SnapshotStore,
    TextFeatureStore,
    TokenStore,
)
from storage.catalog import ItemCatalog
from storage.encryption import MasterKeys, load_master_keys
from storage.secrets import ProcessSecrets

MEMORY_SCHEME = "memory://"


async def _nothing() -> None:
    return None




@dataclass
class Stores:
    """One backend's adapters. Close it once (Postgres: disposes of the pool)."""

    url: str
    events: EventLog
    snapshots: SnapshotStore
    text_features: TextFeatureStore
    catalog_store: CatalogStore
    item_spaces: ItemSpaceStore
    tokens: TokenStore
    eraser: Eraser
    _close: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)
    # Postgres only: fails when stored user keys are wrapped by a master key we lack.
    check_keys: Callable[[], Awaitable[None]] = field(default=_nothing, repr=False)
    # What recommendation responses served (online experiments); keyword-only so that the
    # positional fields above keep their order.
    impressions: ImpressionStore = field(kw_only=True)
    # Registered text encoders and the active one (storage.encoder_versions).
    encoder_versions: EncoderVersionStore = field(kw_only=True)

    def catalog(self, encoder: AsyncEncoder) -> ItemCatalog:
        """The catalog, encoding new and changed items with ``encoder`` (under the active
        encoder version when ``encoder`` can encode with it)."""
        return ItemCatalog(self.catalog_store, encoder, versions=self.encoder_versions)

    async def close(self) -> None:
        await self._close()


_memory: dict[str, Stores] = {}


def is_memory_url(url: str) -> bool:
    return url.startswith(MEMORY_SCHEME)


def open_stores(
    url: str, *, pool_size: int = 5, master_keys: MasterKeys | None = None
) -> Stores:
    """The adapters for ``url``; raises ValueError naming an unsupported scheme.

    With ``master_keys`` (Postgres), users' personal data is sealed at rest with per-user
    keys (:mod:`storage.encryption`); without, it is written in the clear, and sealed data
    already stored cannot be read. Memory stores hold nothing at rest and ignore it.
    """
    if is_memory_url(url):
        stores = _memory.get(url)
        if stores is None:
            stores = _memory[url] = _open_memory(url)
        return stores
    # rejects other schemes with a clear message
    return _open_postgres(url, pool_size, master_keys)


def forget_memory(url: str) -> None:
    """Drop a ``memory://`` store set (tests start each system from empty)."""
    _memory.pop(url, None)


def _open_memory(url: str) -> Stores:
    from storage.encoder_versions import InMemoryEncoderVersionStore
    from storage.erasure import InMemoryEraser
    from storage.impression_store import InMemoryImpressionStore
    from storage.item_spaces import InMemoryItemSpaceStore
    from storage.memory import InMemoryEventLog, InMemorySnapshotStore
    from storage.memory_catalog import InMemoryCatalogStore
    from storage.text_features import InMemoryTextFeatureStore
    from storage.tokens import InMemoryTokenStore

    events = InMemoryEventLog()
    snapshots = InMemorySnapshotStore()
    features = InMemoryTextFeatureStore()
    impressions = InMemoryImpressionStore()
    eraser = InMemoryEraser(events, snapshots, features, impressions)
    catalog = InMemoryCatalogStore(events, eraser)
    return Stores(
        url, events, snapshots, features, catalog,
        InMemoryItemSpaceStore(), InMemoryTokenStore(), eraser, impressions=impressions,
        encoder_versions=InMemoryEncoderVersionStore(catalog),
    )


def _open_postgres(url: str, pool_size: int, master_keys: MasterKeys | None) -> Stores:
    from storage.database import create_engine
    from storage.encoder_versions import PostgresEncoderVersionStore
    from storage.erasure import PostgresEraser
    from storage.impression_store import PostgresImpressionStore
    from storage.item_spaces import PostgresItemSpaceStore
    from storage.postgres import PostgresEventLog
    from storage.postgres_catalog import PostgresCatalogStore
    from storage.postgres_snapshots import PostgresSnapshotStore
    from storage.retry import DEFAULT_RETRY
    from storage.text_features import PostgresTextFeatureStore
    from storage.tokens import PostgresTokenStore
    from storage.user_keys import UserKeys, check_master_keys

    engine = create_engine(url, pool_size=pool_size)
    keys = UserKeys(master_keys) if master_keys is not None else None

    async def check_keys() -> None:
        if master_keys is not None:
            # Through the retry policy: a server that refuses connections (restarting, or
            # out of connection slots) is StorageUnavailable (503), not a bare driver error.
            await DEFAULT_RETRY.run(lambda: check_master_keys(engine, master_keys))

    return Stores(
        url,
        PostgresEventLog(engine, keys=keys),
        PostgresSnapshotStore(engine, keys=keys),
        PostgresTextFeatureStore(engine, keys=keys),
        PostgresCatalogStore(engine),
        PostgresItemSpaceStore(engine),
        PostgresTokenStore(engine),
        PostgresEraser(engine, keys=keys),
        engine.dispose,
        check_keys,
        impressions=PostgresImpressionStore(engine),
        encoder_versions=PostgresEncoderVersionStore(engine),
    )


PASSWORD_ENV = "PORTRAIT_DATABASE_PASSWORD"
URL_ENV = "PORTRAIT_DATABASE_URL"


@dataclass(frozen=True)
class StoreFactory:
    """What a process is given to open its own stores: plain data, so Ray can ship it to a
    shard, which opens them in its own process (a connection pool cannot cross processes).

    It never carries the database password: Ray keeps actor and deployment arguments in its
    GCS and shows them in its tools. The password is removed here, and each process that
    opens the stores takes it from its own environment (:meth:`connect_url`).
    """

    url: str
    pool_size: int = 4
    # Seal personal data at rest; the master key is read by each process itself
    # (PORTRAIT_MASTER_KEY, else this file), never shipped in arguments.
    encrypt: bool = True
    master_key_file: str | None = None

    def __post_init__(self) -> None:
        if not is_memory_url(self.url):
            parsed = make_url(self.url)
            if parsed.password is not None:
                # URL.set(password=None) keeps the password; the named tuple's _replace drops it.
                bare = parsed._replace(password=None).render_as_string(hide_password=False)
                object.__setattr__(self, "url", bare)

    def connect_url(self) -> str:
        """The URL with the password from this process's environment: ``PORTRAIT_DATABASE_
        PASSWORD``, or the password of ``PORTRAIT_DATABASE_URL`` when it names the same
        user, host and database. Without either, the URL as is (trust or peer auth, a
        ``.pgpass`` file, the embedded server)."""
        if is_memory_url(self.url):
            return self.url
        mine = make_url(self.url)
        secrets = ProcessSecrets.read()
        password = ProcessSecrets.value(secrets.database_password)
        named = ProcessSecrets.value(secrets.database_url)
        if password is None and named:
            env = make_url(named)
            same = (env.username, env.host, env.port, env.database)
            if same == (mine.username, mine.host, mine.port, mine.database):
                password = env.password
        if password is None:
            return self.url
        return mine.set(password=password).render_as_string(hide_password=False)

    def master_keys(self) -> MasterKeys | None:
        """This process's master keys (None for memory stores or with encryption off).

        Raises:
            MasterKeyError: encryption is on and no valid key is configured.
        """
        if not self.encrypt or is_memory_url(self.url):
            return None
        return load_master_keys(Path(self.master_key_file) if self.master_key_file else None)

    def open_now(self) -> Stores:
        """The stores, without the start-up key check (:meth:`open` does it)."""
        return open_stores(self.connect_url(), pool_size=self.pool_size,
                           master_keys=self.master_keys())

    async def open(self) -> Stores:
        """The stores, after checking that this process's master key is the data's."""
        stores = self.open_now()
        try:
            await stores.check_keys()
        except BaseException:
            await stores.close()
            raise
        return stores


def password_of(url: str) -> str | None:
    """The password in a database URL, if any (memory URLs have none)."""
    return None if is_memory_url(url) else make_url(url).password
