"""The backends a contract suite runs on, as mixins that provide a ``stores`` fixture.

A suite is an abstract class of behaviour tests that builds its adapter from ``stores`` (one
backend's :class:`storage.stores.Stores`, opened by URL the way the composition root opens
them); each ``Test*`` subclass mixes in one backend:

* :class:`OnMemory`: the in-memory adapters (a private ``memory://`` set per test);
* :class:`OnEmbeddedPostgres` / :class:`OnMachinePostgres`: the Postgres adapters on the
  session's embedded server, or on the machine's server (skipped when unreachable), every
  table emptied first, data in the clear;
* :class:`OnEmbeddedPostgresSealed`: the Postgres adapters with users' data sealed under
  per-user keys (encryption at rest, the deployed default).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.encryption import MasterKeys, parse_master_keys
from storage.stores import Stores, forget_memory, open_stores
from storage.user_keys import UserKeys

# Users the sealed backend gives a data key before a test runs. Sealed adapters keep nothing
# for a user without one (their first append makes it), so suites that write derived data
# without appending first (cached text features) use these ids.
KEYED_USERS = ("u1", "u2", "u3")


def suite_master_keys() -> MasterKeys:
    """The master keys every system the tests start uses (tests/conftest.py sets them)."""
    return parse_master_keys(os.environ["PORTRAIT_MASTER_KEY"], "PORTRAIT_MASTER_KEY")


async def _opened(url: str, master_keys: MasterKeys | None = None) -> AsyncIterator[Stores]:
    stores = open_stores(url, pool_size=2, master_keys=master_keys)
    try:
        yield stores
    finally:
        await stores.close()


class OnMemory:
    """The in-memory adapters."""

    sealed = False

    @pytest_asyncio.fixture(loop_scope="session")
    async def stores(self) -> AsyncIterator[Stores]:
        url = f"memory://contract-{uuid.uuid4().hex}"
        try:
            yield open_stores(url)
        finally:
            forget_memory(url)


class OnEmbeddedPostgres:
    """The Postgres adapters on the embedded server, without encryption."""

    sealed = False

    @pytest_asyncio.fixture(loop_scope="session")
    async def stores(self, embedded_engine: AsyncEngine, embedded_pg_url: str
                     ) -> AsyncIterator[Stores]:
        async for stores in _opened(embedded_pg_url):
            yield stores


class OnMachinePostgres:
    """The Postgres adapters on the machine's server (skipped when unreachable)."""

    sealed = False

    @pytest_asyncio.fixture(loop_scope="session")
    async def stores(self, machine_engine: AsyncEngine, machine_pg_url: str
                     ) -> AsyncIterator[Stores]:
        async for stores in _opened(machine_pg_url):
            yield stores


class OnEmbeddedPostgresSealed:
    """The Postgres adapters on the embedded server, sealing users' data at rest."""

    sealed = True

    @pytest_asyncio.fixture(loop_scope="session")
    async def stores(self, embedded_engine: AsyncEngine, embedded_pg_url: str
                     ) -> AsyncIterator[Stores]:
        keys = suite_master_keys()
        async with embedded_engine.begin() as conn:
            await UserKeys(keys).current(conn, KEYED_USERS, create=True)
        async for stores in _opened(embedded_pg_url, keys):
            yield stores
