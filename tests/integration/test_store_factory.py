"""The database password never travels in what Ray ships (actor and deployment arguments):
each process takes it from its own environment."""

from __future__ import annotations

import pickle

import pytest

from storage.stores import PASSWORD_ENV, URL_ENV, StoreFactory

URL = "postgresql+asyncpg://portrait:s3cret-pw@db.internal:5432/portrait"


def test_the_factory_carries_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(URL_ENV, raising=False)
    factory = StoreFactory(URL)
    assert "s3cret" not in factory.url and "s3cret" not in repr(factory)
    assert b"s3cret" not in pickle.dumps(factory)
    assert factory.connect_url() == factory.url  # nothing in this environment


def test_each_process_takes_the_password_from_its_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    factory = StoreFactory(URL)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.setenv(URL_ENV, URL)
    assert factory.connect_url() == URL
    monkeypatch.setenv(URL_ENV, URL.replace("db.internal", "elsewhere"))
    assert "s3cret" not in factory.connect_url()  # another server's password is not ours
    monkeypatch.setenv(PASSWORD_ENV, "from-the-secret")
    assert factory.connect_url() == URL.replace("s3cret-pw", "from-the-secret")
    assert StoreFactory("memory://x").connect_url() == "memory://x"


def test_cli_commands_take_the_password_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`portrait migrate` and the other CLI commands used the URL as given: with the password
    in PORTRAIT_DATABASE_PASSWORD (how the deploy manifests pass it) they could not log in."""
    from serve.cli.database import database
    from serve.settings import Settings

    monkeypatch.setenv("PORTRAIT_DATABASE_PASSWORD", "s3cret")
    with database(Settings(database_url="postgresql://app@db:5432/portrait")) as url:
        assert url == "postgresql://app:s3cret@db:5432/portrait"
    with database(Settings(database_url="postgresql://app:given@db:5432/portrait")) as url:
        assert url == "postgresql://app:given@db:5432/portrait"
