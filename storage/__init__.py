"""Portrait's storage adapters: the event log and snapshot store, in Postgres and in memory.

* :mod:`storage.schema` - the tables (SQLAlchemy Core); :mod:`storage.migrate` - Alembic.
* :mod:`storage.database` - asyncpg engines; :mod:`storage.embedded` - a private server.
* :mod:`storage.postgres`, :mod:`storage.memory` - adapters of :mod:`portrait.ports`;
  :mod:`storage.validation` and :mod:`storage.planning` hold the semantics they share.
* :mod:`storage.retry` - driver errors -> :mod:`portrait.errors`, bounded retries.
"""

from storage.database import async_url, create_engine
from storage.embedded import EmbeddedPostgres
from storage.memory import InMemoryEventLog, InMemorySnapshotStore
from storage.migrate import downgrade, downgrade_async, upgrade, upgrade_async
from storage.postgres import PostgresEventLog, PostgresSnapshotStore
from storage.retry import RetryPolicy
from storage.schema import metadata

__all__ = [
    "EmbeddedPostgres",
    "InMemoryEventLog",
    "InMemorySnapshotStore",
    "PostgresEventLog",
    "PostgresSnapshotStore",
    "RetryPolicy",
    "async_url",
    "create_engine",
    "downgrade",
    "downgrade_async",
    "metadata",
    "upgrade",
    "upgrade_async",
]
