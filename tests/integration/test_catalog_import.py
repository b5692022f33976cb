"""``portrait import-catalog``'s import on the embedded Postgres: an interrupted import keeps
the chunks it finished and a re-run skips them, saying so; items' own vectors from an .npz
side file are checked whole before anything is written."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.text_features import ThreadedEncoder
from portrait.catalog import ItemRecord
from portrait.errors import InvalidField
from serve.catalog_import import import_items, load_vectors, summary
from storage.catalog import ItemCatalog
from storage.postgres_catalog import PostgresCatalogStore
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
DIM = 16
MODEL = "test/hashing"
ITEMS = [ItemRecord(f"i{k:03d}", f"Item {k}", f"words about {k}", ("T",)) for k in range(50)]


class Interrupted(Exception):
    """Stands for a Ctrl-C or a crash in the middle of an import."""


class FailingAfter(ThreadedEncoder):
    """Encodes ``calls`` chunks, then fails; counts the texts it encoded."""

    def __init__(self, calls: int) -> None:
        super().__init__(HashingEncoder(dim=DIM, model_id=MODEL))
        self.calls = calls
        self.texts = 0

    async def encode(self, texts):  # type: ignore[no-untyped-def]
        if self.calls == 0:
            raise Interrupted
        self.calls -= 1
        self.texts += len(texts)
        return await super().encode(texts)


async def test_an_interrupted_import_resumes_where_it_stopped(embedded_engine: AsyncEngine
                                                              ) -> None:
    store = PostgresCatalogStore(embedded_engine)
    with pytest.raises(Interrupted):
        await import_items(ItemCatalog(store, FailingAfter(3), chunk_size=10), ITEMS,
                           out=io.StringIO())
    assert len(await store.titles()) == 30  # three chunks finished and kept
    again = FailingAfter(calls=100)
    bar = io.StringIO()
    result = await import_items(ItemCatalog(store, again, chunk_size=10), ITEMS, out=bar)
    assert (result.unchanged, result.inserted, result.encoded, again.texts) == (30, 20, 20, 20)
    assert "skipped=30" in bar.getvalue() and "encoded=20" in bar.getvalue(), bar.getvalue()
    line = summary(result, len(ITEMS), 1.0)
    assert "20 new" in line and "30 skipped (already stored)" in line and "20 encoded" in line
    assert len(await store.titles()) == 50


def write_npz(path: Path, ids: list[str], vectors: np.ndarray, model: str | None = MODEL
              ) -> Path:
    if model is None:
        np.savez(path, ids=np.array(ids), vectors=vectors)
    else:
        np.savez(path, ids=np.array(ids), vectors=vectors, model=np.array(model))
    return path


async def test_vectors_from_a_side_file_are_stored_not_encoded(embedded_engine: AsyncEngine,
                                                                tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = write_npz(tmp_path / "v.npz", ["i001", "i003"], rng.normal(size=(2, DIM)))
    vectors = load_vectors(path, ITEMS)
    assert [k for k, v in enumerate(vectors) if v is not None] == [1, 3]
    store = PostgresCatalogStore(embedded_engine)
    enc = FailingAfter(calls=100)
    result = await import_items(ItemCatalog(store, enc, chunk_size=10), ITEMS, vectors,
                                out=io.StringIO())
    assert (result.given, result.encoded, enc.texts) == (2, 48, 48)


@pytest.mark.parametrize(("ids", "rows", "model", "field"), [
    (["i001", "nope"], 2, MODEL, "vectors[1]"),
    (["i001", "i001"], 2, MODEL, "vectors[1]"),
    (["i001", "i002"], 3, MODEL, "vectors"),
    (["i001"], 1, None, "vector_model"),
])
async def test_a_bad_side_file_is_refused_naming_the_row(
    tmp_path: Path, ids: list[str], rows: int, model: str | None, field: str
) -> None:
    path = write_npz(tmp_path / "v.npz", ids, np.ones((rows, DIM)), model)
    with pytest.raises(InvalidField) as err:
        load_vectors(path, ITEMS)
    assert err.value.field == field, err.value


async def test_a_zero_row_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    vectors = np.ones((2, DIM))
    vectors[1] = 0
    with pytest.raises(InvalidField) as err:
        load_vectors(write_npz(tmp_path / "z.npz", ["i000", "i004"], vectors), ITEMS)
    assert err.value.field == "vectors[1]" and "i004" in err.value.reason
    with pytest.raises(InvalidField) as err:
        load_vectors(tmp_path / "absent.npz", ITEMS, MODEL)
    assert err.value.field == "vectors"
