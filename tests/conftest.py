"""Shared pytest fixtures."""

from __future__ import annotations

# ==================================================================================
# Database fixtures (owned by the storage layer: storage/, migrations/).
#
# * embedded_pg / embedded_pg_url: one private Postgres for the session (unix socket,
#   data in a temporary directory), migrated to head.
# * embedded_engine: a fresh engine per test on that server, tables truncated first.
# * machine_pg_url / machine_engine: the same on the machine's Postgres
#   ($PORTRAIT_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test), in a
#   scratch database created for the session; tests skip, with the reason, if the server
#   cannot be reached.
# * embedded_scratch_url: an empty database on the embedded server, for one test.
# * scratch_database(admin_url): context manager creating and dropping a database.
#
# Migrations and the setup helpers run their own event loops, in a worker thread, so that
# they never disturb the loops pytest-asyncio runs tests in.
# ==================================================================================
import asyncio
import contextlib
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from storage.database import create_engine
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade

_T = TypeVar("_T")

MACHINE_PG_URL = os.environ.get(
    "PORTRAIT_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
_TRUNCATE = text(
    "TRUNCATE events, snapshots, items, text_features, item_spaces, user_keys, erasures, "
    "impressions, api_tokens, encoder_versions, encoder_active, item_vectors RESTART IDENTITY"
)

# Every system the tests start seals personal data at rest, as a deployment does by default;
# the processes it starts (Ray workers included) inherit this master key.
TEST_MASTER_KEY = "cG9ydHJhaXQgdGVzdHMnIG1hc3RlciBrZXkgIDMyIGI="
os.environ.setdefault("PORTRAIT_MASTER_KEY", TEST_MASTER_KEY)


def in_thread(call: Callable[[], _T]) -> _T:
    """``call()`` run in a worker thread, where it may start its own event loop."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="db-setup")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def run_blocking(make: Callable[[], Awaitable[_T]]) -> _T:
    """Run the coroutine ``make()`` returns on a private loop in a worker thread."""

    async def main() -> _T:
        return await make()

    return in_thread(lambda: asyncio.run(main()))


def _driver_dsn(url: str) -> str:
    """A SQLAlchemy URL as a DSN asyncpg accepts (no ``+driver``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _with_database(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


async def _admin(url: str, sql: str) -> None:
    conn = await asyncpg.connect(_driver_dsn(url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(admin_url: str, prefix: str = "portrait_test") -> Iterator[str]:
    """Create a randomly named database on ``admin_url``'s server; yield its URL; drop it."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    run_blocking(lambda: _admin(admin_url, f'CREATE DATABASE "{name}"'))
    try:
        yield _with_database(admin_url, name)
    finally:
        run_blocking(lambda: _admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _fresh_engine(url: str) -> AsyncEngine:
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.execute(_TRUNCATE)
    return engine


@pytest.fixture(scope="session")
def embedded_pg() -> Iterator[EmbeddedPostgres]:
    """A private Postgres server for the whole session, deleted afterwards."""
    # Not under pytest's basetemp: concurrent pytest sessions prune each other's old basetemp
    # directories, which would pull the data directory from under a running server.
    base = Path(tempfile.mkdtemp(prefix="portrait-pg-"))
    server = EmbeddedPostgres(base / "data")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def embedded_pg_url(embedded_pg: EmbeddedPostgres) -> str:
    """URL of the embedded server's ``portrait`` database, migrated to head."""
    in_thread(lambda: upgrade(embedded_pg.url))
    return embedded_pg.url


@pytest_asyncio.fixture(loop_scope="session")
async def embedded_engine(embedded_pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the embedded server, with every table emptied."""
    engine = await _fresh_engine(embedded_pg_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def embedded_scratch_url(embedded_pg: EmbeddedPostgres) -> Iterator[str]:
    """URL of an empty, randomly named database on the embedded server, dropped after."""
    with scratch_database(embedded_pg.url) as url:
        yield url


@pytest.fixture(scope="session")
def machine_pg_url() -> Iterator[str]:
    """URL of a scratch database on the machine's Postgres, migrated to head."""
    try:
        run_blocking(lambda: _admin(MACHINE_PG_URL, "SELECT 1"))
    except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
        pytest.skip(f"machine Postgres at {MACHINE_PG_URL} is unreachable: {exc!r}")
    with scratch_database(MACHINE_PG_URL) as url:
        in_thread(lambda: upgrade(url))
        yield url


@pytest_asyncio.fixture(loop_scope="session")
async def machine_engine(machine_pg_url: str) -> AsyncIterator[AsyncEngine]:
    """An engine on the machine's Postgres scratch database, with every table emptied."""
    engine = await _fresh_engine(machine_pg_url)
    try:
        yield engine
    finally:
        await engine.dispose()


# ==================================================================================
# End of the database fixtures.
# ==================================================================================


# ==================================================================================
# Test tiers: a test's folder is its tier, and each tier is a marker, so `-m` selects by
# what a tier needs (README, "Tests"). `./dev test fast` runs the tiers that need neither
# Ray nor vLLM.
# ==================================================================================

TIERS = {
    "unit": "unit", "contract": "contract", "integration": "integration", "actors": "actors",
    "api": "api", "offline": "offline", "engine": "engine", "serve": "ray", "gpu": "gpu",
    "faults": "faults", "deploy": "deploy", "inspector": "inspector", "system": "system",
}
_NO_RAY_TIERS = {
    "unit", "contract", "integration", "actors", "api", "offline", "faults", "inspector",
    "deploy",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        parts = Path(str(item.fspath)).relative_to(root).parts
        tier = TIERS.get(parts[0]) if len(parts) > 1 else None
        if tier is not None:
            item.add_marker(getattr(pytest.mark, tier))
    # The multi-node cluster (token auth, its own ports) goes last: a Ray system started
    # after it in the same session found its GCS refusing the token-less driver.
    items.sort(key=lambda item: Path(str(item.fspath)).name == "test_multinode.py")


@pytest.fixture(autouse=True)
def _no_ray_outside_its_tiers(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tiers documented as Ray-free stay Ray-free: ray.init raises there."""
    parts = Path(str(request.node.fspath)).relative_to(Path(__file__).parent).parts
    if len(parts) > 1 and parts[0] in _NO_RAY_TIERS:
        try:
            import ray
        except ImportError:
            return

        def refuse(*_: object, **__: object) -> None:
            raise RuntimeError(f"ray.init() in the Ray-free {parts[0]!r} test tier")

        monkeypatch.setattr(ray, "init", refuse)


# The suite's verdict is pytest's exit status. Engines the tiers leave in this process (vLLM's
# CPU engines, Ray's driver) can crash while the interpreter tears down after the summary has
# been printed (seen in CI: a segfault turned a finished run into exit status 139). So once
# pytest is done, leave at once with its status.
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    status = config.stash.get(_EXIT_STATUS, None)
    if status is not None and os.environ.get("PORTRAIT_TEST_HARD_EXIT", "1") == "1":
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


_EXIT_STATUS = pytest.StashKey[int]()
