"""Driver failures surface as portrait.errors, after bounded retries when transient."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import NoReturn

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.errors import (
    StorageError,
    StorageIntegrityError,
    StorageUnavailable,
    VersionConflict,
)
from portrait.events import ItemViewed
from portrait.ports import Snapshot
from storage.database import create_engine
from storage.postgres import PostgresEventLog, PostgresSnapshotStore
from storage.retry import COUNTS, RetryPolicy

pytestmark = pytest.mark.asyncio(loop_scope="session")

FAST = RetryPolicy(attempts=3, base_delay=0.05)


def _retries(caplog: pytest.LogCaptureFixture) -> int:
    return sum(1 for record in caplog.records if record.name == "storage.retry")


async def test_closed_port_is_unavailable_after_bounded_retries(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="storage.retry")
    engine = create_engine("postgresql://postgres@127.0.0.1:1/test", connect_timeout=1.0)
    log = PostgresEventLog(engine, retry=FAST)
    event = ItemViewed(event_id="e1", user_id="u1", occurred_at=1.0, item_id="i1")
    try:
        for operation in (
            lambda: log.version("u1"),
            lambda: log.append("u1", [event]),
            lambda: log.read_all(),
            lambda: PostgresSnapshotStore(engine, retry=FAST).save_many(
                [Snapshot("u1", 1, b"", "c")]
            ),
        ):
            caplog.clear()
            began = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                await operation()
            elapsed = time.monotonic() - began
            assert isinstance(caught.value.__cause__, OSError)  # the driver's error, chained
            assert _retries(caplog) == FAST.attempts - 1
            # Two backoffs of at least 25 ms and 50 ms; nowhere near a connect timeout.
            assert 0.07 <= elapsed < 3.0
    finally:
        await engine.dispose()


async def test_retry_policy_bounds_and_passthrough() -> None:
    calls = 0

    async def flaky() -> NoReturn:
        nonlocal calls
        calls += 1
        raise ConnectionResetError("reset by peer")

    before = dataclasses.replace(COUNTS)
    with pytest.raises(StorageUnavailable):
        await RetryPolicy(attempts=3, base_delay=0.001).run(flaky)
    assert calls == 3
    # Counted for portrait_storage_retries_total / _unavailable_total.
    assert COUNTS.retries == before.retries + 2
    assert COUNTS.unavailable == before.unavailable + 1

    calls = 0

    async def conflicting() -> NoReturn:
        nonlocal calls
        calls += 1
        raise VersionConflict("u1", 1, 2)

    with pytest.raises(VersionConflict):
        await RetryPolicy(attempts=3, base_delay=0.001).run(conflicting)
    assert calls == 1  # never retried

    async def buggy() -> NoReturn:
        raise KeyError("bug")

    with pytest.raises(KeyError):  # not a driver error: propagates unchanged
        await FAST.run(buggy)


async def test_unanticipated_integrity_error(embedded_engine: AsyncEngine) -> None:
    insert = text(
        "INSERT INTO snapshots (user_id, seq, state, config_hash) VALUES ('u', 1, '', 'c')"
    )

    async def write() -> None:
        async with embedded_engine.begin() as conn:
            await conn.execute(insert)

    await FAST.run(write)
    with pytest.raises(StorageIntegrityError):
        await FAST.run(write)


async def test_missing_table_is_a_storage_error(embedded_engine: AsyncEngine) -> None:
    async def query() -> None:
        async with embedded_engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table"))

    failures = COUNTS.failures
    with pytest.raises(StorageError) as caught:
        await FAST.run(query)
    assert type(caught.value) is StorageError
    assert COUNTS.failures == failures + 1  # portrait_storage_failures_total


async def test_dead_pooled_connection_is_retried(
    embedded_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="storage.retry")
    log = PostgresEventLog(embedded_engine, retry=FAST)
    await log.append("u1", [ItemViewed(event_id="e1", user_id="u1", occurred_at=1.0, item_id="i")])
    # Kill the server side of every pooled connection, as a Postgres restart would.
    killer = create_engine(embedded_engine.url.render_as_string(hide_password=False))
    try:
        async with killer.connect() as conn:
            killed = await conn.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'portrait' AND pid <> pg_backend_pid()"
                )
            )
    finally:
        await killer.dispose()
    assert killed >= 1
    assert await log.version("u1") == 1
    assert _retries(caplog) >= 1


async def test_undecodable_stored_event_is_an_integrity_error(
    embedded_engine: AsyncEngine,
) -> None:
    async with embedded_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO events (user_id, seq, event_id, event_type, schema_version, "
                "occurred_at, payload) VALUES ('u1', 1, 'e1', 'view', 1, 1.0, '\\xc1')"
            )
        )
    log = PostgresEventLog(embedded_engine, retry=FAST)
    with pytest.raises(StorageIntegrityError):
        await log.read("u1")
    with pytest.raises(StorageIntegrityError):  # not the caller's InvalidInput
        await log.append(
            "u1", [ItemViewed(event_id="e1", user_id="u1", occurred_at=1.0, item_id="i")]
        )


async def test_reads_recover_when_the_server_drops_every_connection(
    embedded_engine: AsyncEngine, embedded_pg_url: str
) -> None:
    """What a Postgres restart does to a warm pool: every pooled connection dies. Writes
    recovered; the raw read path kept handing out its dead connections (503 for good)."""
    engine = create_engine(embedded_pg_url, pool_size=3, max_overflow=0)
    log = PostgresEventLog(engine, retry=FAST)
    try:
        await log.append("u1", [ItemViewed("e1", "u1", 1.0, "i1")])
        # Warm the whole pool: three concurrent reads hold three connections.
        import asyncio

        await asyncio.gather(*(log.read("u1") for _ in range(3)))
        async with embedded_engine.connect() as admin:
            killed = (await admin.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'portrait' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            ))).scalar()
        assert killed and killed >= 3
        for _ in range(6):  # more reads than pooled connections: none may stay dead
            assert [r.seq for r in await log.read("u1")] == [1]
        assert [r.seq for r in await log.read_all()] == [1]
    finally:
        await engine.dispose()


async def test_only_a_lost_connection_counts_as_a_disconnect() -> None:
    import asyncpg

    from storage.retry import is_disconnect

    assert is_disconnect(asyncpg.InterfaceError("connection is closed"))
    assert is_disconnect(ConnectionResetError("reset by peer"))
    # A connection left mid-protocol by a kill (seen in CI as a read that failed for good).
    assert is_disconnect(asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"))
    assert not is_disconnect(TimeoutError())  # a statement timeout leaves the connection usable
    assert not is_disconnect(asyncpg.SerializationError("could not serialize"))


async def test_a_stuck_writer_cannot_stall_ingest_for_ever(
    embedded_engine: AsyncEngine, embedded_pg_url: str
) -> None:
    """Every append takes one advisory lock. A session that holds it (a stuck statement, an
    abandoned transaction) used to make every other writer wait without limit; with the
    session's lock_timeout the append fails as unavailable (503, retry) in bounded time and
    succeeds once the lock is free."""
    from storage.postgres import WRITE_LOCK_KEY

    engine = create_engine(embedded_pg_url, lock_timeout_s=0.3)
    log = PostgresEventLog(engine, retry=FAST)
    event = ItemViewed("stuck-1", "stuck-user", 1.0, "i1")
    try:
        async with embedded_engine.connect() as holder:
            await holder.execute(text(f"SELECT pg_advisory_lock({WRITE_LOCK_KEY})"))
            began = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await log.append("stuck-user", [event])
            assert time.monotonic() - began < 5.0  # three attempts of 0.3 s plus backoff
            await holder.execute(text(f"SELECT pg_advisory_unlock({WRITE_LOCK_KEY})"))
        (result,) = await log.append("stuck-user", [event])
        assert result.seq == 1 and not result.duplicate  # nothing was half-written before
    finally:
        await engine.dispose()


async def test_session_timeouts_are_set_on_every_connection(embedded_pg_url: str) -> None:
    engine = create_engine(embedded_pg_url, statement_timeout_s=2, lock_timeout_s=0.5,
                           idle_in_transaction_timeout_s=30)
    try:
        async with engine.connect() as conn:
            got = [(await conn.execute(text(f"SHOW {name}"))).scalar() for name in (
                "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout")]
        assert got == ["2s", "500ms", "30s"]
    finally:
        await engine.dispose()


async def test_driver_errors_never_quote_sql_parameters(embedded_engine: AsyncEngine,
                                                        embedded_pg_url: str) -> None:
    """Error text travels into logs (and, before, into 500 bodies): it must not carry another
    request's ids or payloads."""
    engine = create_engine(embedded_pg_url)
    try:
        async with engine.connect() as conn:
            with pytest.raises(Exception) as caught:
                await conn.execute(text("SELECT 1 / 0, CAST(:v AS text)"), {"v": "secret-user-id"})
        assert "secret-user-id" not in str(caught.value)
    finally:
        await engine.dispose()
