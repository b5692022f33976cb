"""The master key: missing, malformed or wrong keys fail at start with a message that says
what to do; a rotation re-wraps user keys without touching the data; the CLI reports it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.errors import StorageIntegrityError
from portrait.events import ItemViewed
from serve.cli import main
from storage.encryption import (
    MASTER_KEY_ENV,
    MasterKeyError,
    new_master_key_text,
    parse_master_keys,
)
from storage.postgres import PostgresEventLog
from storage.stores import StoreFactory
from storage.user_keys import UserKeys, rewrap

OLD, NEW = new_master_key_text(), new_master_key_text()


def key_id(text_key: str) -> str:
    return parse_master_keys(text_key, "test").active_id


async def write(engine: AsyncEngine, master: str, user: str = "u1") -> None:
    log = PostgresEventLog(engine, keys=UserKeys(parse_master_keys(master, "test")))
    await log.append(user, [ItemViewed(f"{user}-e1", user, 1.0, "i1")])


def test_no_master_key_is_a_clear_start_up_error(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.delenv(MASTER_KEY_ENV)
    factory = StoreFactory("postgresql://x@127.0.0.1/x", master_key_file=str(tmp_path / "none"))
    with pytest.raises(MasterKeyError, match="PORTRAIT_MASTER_KEY.*no master key"):
        factory.master_keys()
    monkeypatch.setenv(MASTER_KEY_ENV, "too-short")
    with pytest.raises(MasterKeyError, match="32 bytes"):
        factory.master_keys()
    # Off is off: no key needed (and nothing sealed is written).
    assert dataclasses.replace(factory, encrypt=False).master_keys() is None


async def test_a_wrong_master_key_fails_at_open_naming_the_key(
    embedded_engine: AsyncEngine, embedded_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await write(embedded_engine, OLD)
    monkeypatch.setenv(MASTER_KEY_ENV, NEW)
    with pytest.raises(MasterKeyError) as caught:
        await StoreFactory(embedded_pg_url).open()
    assert key_id(OLD) in str(caught.value) and "not given" in str(caught.value)
    # A process without any key cannot read the sealed log, and says why.
    plain = PostgresEventLog(embedded_engine)
    with pytest.raises(StorageIntegrityError, match="no master key"):
        await plain.read("u1")


async def test_rotation_rewraps_user_keys_and_the_data_still_reads(
    embedded_engine: AsyncEngine, embedded_pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("u1", "u2", "u3"):
        await write(embedded_engine, OLD, user)
    async with embedded_engine.connect() as conn:
        payloads_before = (await conn.execute(
            text("SELECT payload FROM events ORDER BY position"))).scalars().all()
    both = parse_master_keys(f"{NEW},{OLD}", "test")  # the new one first: active
    assert await rewrap(embedded_engine, both, batch=2) == 3
    assert await rewrap(embedded_engine, both) == 0  # safe to run again
    async with embedded_engine.connect() as conn:
        ids = set((await conn.execute(text("SELECT master_key_id FROM user_keys"))).scalars())
        payloads_after = (await conn.execute(
            text("SELECT payload FROM events ORDER BY position"))).scalars().all()
    assert ids == {key_id(NEW)} and payloads_after == payloads_before  # data untouched
    monkeypatch.setenv(MASTER_KEY_ENV, NEW)  # the old key is no longer needed
    stores = await StoreFactory(embedded_pg_url).open()
    try:
        assert [r.event.item_id for r in await stores.events.read("u2")] == ["i1"]
    finally:
        await stores.close()
    monkeypatch.setenv(MASTER_KEY_ENV, OLD)  # ... and no longer enough
    with pytest.raises(MasterKeyError):
        await StoreFactory(embedded_pg_url).open()


def test_the_cli_rotates_and_reports(embedded_pg_url: str, embedded_engine: AsyncEngine,
                                     monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio
    import threading

    def seed() -> None:  # the test's loop is busy: seed from a thread with its own
        from storage.database import create_engine

        async def go() -> None:
            engine = create_engine(embedded_pg_url, pool_size=1)
            try:
                await write(engine, OLD)
            finally:
                await engine.dispose()

        asyncio.run(go())

    worker = threading.Thread(target=seed)
    worker.start()
    worker.join()
    monkeypatch.setenv("PORTRAIT_DATABASE_URL", embedded_pg_url)
    monkeypatch.setenv(MASTER_KEY_ENV, f"{NEW},{OLD}")
    assert main(["master-key", "status"]) == 0
    assert f"{key_id(OLD)}: 1 user keys" in capsys.readouterr().out
    assert main(["master-key", "rotate"]) == 0
    out = capsys.readouterr().out
    assert "1 user keys re-wrapped" in out and f"{key_id(NEW)}: 1 user keys" in out
    monkeypatch.setenv(MASTER_KEY_ENV, NEW)
    assert main(["master-key", "status"]) == 0
    assert "NOT CONFIGURED" not in capsys.readouterr().out
    monkeypatch.setenv(MASTER_KEY_ENV, OLD)  # a key the stored user keys no longer use
    assert main(["master-key", "status"]) == 0
    assert f"{key_id(NEW)}: 1 user keys  NOT CONFIGURED" in capsys.readouterr().out
