"""`portrait train-encoder` against a real database: it trains on the log and the catalog,
writes a folder its record describes, registers it, and refuses a log too small to learn
from with a clear message. Torch on CPU, MiniLM's top layers, one epoch: about a minute."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest.importorskip("torch")

from actors.text_features import ThreadedEncoder  # noqa: E402
from encoding.encoder_checkpoint import read_record, verify_checkpoint  # noqa: E402
from portrait.catalog import ItemRecord  # noqa: E402
from portrait.events import ItemClicked  # noqa: E402
from serve.cli import main  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.stores import open_stores  # noqa: E402
from tests.fakes import HashingEncoder  # noqa: E402

GENRES = ["space opera", "cooking show", "war drama", "romance", "football", "wildlife"]
ITEMS = [ItemRecord(f"i{n}", f"Film {n}", f"A {GENRES[n % 6]} about thing {n}.", ())
         for n in range(36)]


def seed(url: str, users: int) -> None:
    async def run() -> None:
        stores = open_stores(url, pool_size=1)
        try:
            await stores.catalog(ThreadedEncoder(HashingEncoder(dim=16))).upsert(ITEMS)
            for u in range(users):
                genre = u % 6
                # every user's nth click at about the same time: the last is after the cut
                await stores.events.append(f"u{u}", [
                    ItemClicked(f"u{u}-{s}", f"u{u}", 1000.0 * s + u, f"i{genre + 6 * s}")
                    for s in range(6)])
        finally:
            await stores.close()

    upgrade(url)
    asyncio.run(run())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, embedded_scratch_url: str, tmp_path: Path) -> str:
    monkeypatch.setenv("PORTRAIT_DATABASE_URL", embedded_scratch_url)
    monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path))
    return embedded_scratch_url


def test_trains_writes_and_registers(env: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    seed(env, users=60)
    assert main(["train-encoder", "--name", "genres", "--epochs", "1", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "registered as version" in out and "portrait encoder switch genres" in out
    folder = tmp_path / "models" / "encoders" / "genres"
    record = read_record(folder)
    verify_checkpoint(folder, record)
    assert record.name == "genres" and record.data["users"] == 60
    # served with the base's token window, not the shorter one it trained with
    assert record.max_length == 256 and record.training["max_length"] == 64
    assert record.data["train_examples"] >= 200 and 20 <= record.data["validation_examples"] <= 60

    async def registered() -> tuple[str, str | None]:
        stores = open_stores(env, pool_size=1)
        try:
            got = await stores.encoder_versions.by_name("genres")
            assert got is not None
            return got.model_id, got.path
        finally:
            await stores.close()

    assert asyncio.run(registered()) == (record.model_id, str(folder.resolve()))
    # the name is taken now: a second run refuses before training
    assert main(["train-encoder", "--name", "genres", "--epochs", "1"]) == 2
    assert "exists" in capsys.readouterr().err


def test_too_little_to_learn_from_is_refused(env: str, capsys: pytest.CaptureFixture[str]
                                             ) -> None:
    seed(env, users=5)
    assert main(["train-encoder", "--name", "tiny", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert "not enough to train on" in err and "needs at least 200" in err
