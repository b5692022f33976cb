"""The Alembic migrations: they run both ways and build exactly storage.schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from storage.database import create_engine
from storage.impression_store import PostgresImpressionStore
from storage.item_spaces import PostgresItemSpaceStore
from storage.migrate import downgrade_async, upgrade_async
from storage.schema import metadata

REPO = Path(__file__).resolve().parents[2]
TABLES = {
    "events", "snapshots", "items", "text_features", "item_spaces", "api_tokens", "impressions",
    "encoder_versions", "encoder_active", "item_vectors",
}
# Constraint names are part of the schema: later migrations refer to them.
CONSTRAINTS = {
    "pk_events", "uq_events_user_id_event_id", "ck_events_seq_positive", "pk_snapshots",
    "pk_items", "pk_api_tokens", "uq_api_tokens_name", "pk_impressions",
    "pk_encoder_versions", "uq_encoder_versions_name", "uq_encoder_versions_model_id",
    "ck_encoder_versions_state_known", "ck_encoder_active_one_row", "pk_item_vectors",
}


async def _inspect(url: str) -> tuple[set[str], list[object]]:
    """The database's tables, and its differences from storage.schema's metadata."""

    def look(conn: Connection) -> tuple[set[str], list[object]]:
        tables = set(inspect(conn).get_table_names())
        if not TABLES <= tables:
            return tables, []
        names = set(conn.scalars(text("SELECT conname FROM pg_constraint")))
        assert CONSTRAINTS <= names, CONSTRAINTS - names
        return tables, compare_metadata(MigrationContext.configure(conn), metadata)

    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(look)
    finally:
        await engine.dispose()


@pytest.mark.asyncio(loop_scope="session")
async def test_upgrade_downgrade_upgrade(
    embedded_scratch_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # storage.migrate must not depend on the cwd
    await upgrade_async(embedded_scratch_url)
    tables, diff = await _inspect(embedded_scratch_url)
    assert TABLES <= tables
    assert diff == []  # the migration builds what storage.schema describes

    await downgrade_async(embedded_scratch_url, "base")
    tables, _ = await _inspect(embedded_scratch_url)
    assert not tables & TABLES

    await upgrade_async(embedded_scratch_url, "head")
    tables, diff = await _inspect(embedded_scratch_url)
    assert TABLES <= tables
    assert diff == []


@pytest.mark.asyncio(loop_scope="session")
async def test_rows_from_before_0008_read_back_with_the_defaults(
    embedded_scratch_url: str,
) -> None:
    """Rows the previous release wrote (naming no ranker column), before or after the
    upgrade, read back as a space without a ranker and an impression served by the blend."""
    await upgrade_async(embedded_scratch_url, "0007")
    impression = ("INSERT INTO impressions (request_id, user_id, experiment, variant, "
                  "config_hash, item_space, items, served_at) VALUES "
                  "(:rid, 'u1', 'exp', 'control', 'cfg', -1, ARRAY['i1'], 100.0)")
    space = ("INSERT INTO item_spaces (trained_through, events, dim, settings, item_ids, "
             "vectors) VALUES (:through, 1, 1, '{}'::jsonb, ARRAY['i1'], :vectors)")
    vectors = np.ones(1, dtype="<f4").tobytes()
    engine = create_engine(embedded_scratch_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(impression), {"rid": "before"})
            await conn.execute(text(space), {"through": 1, "vectors": vectors})
        await upgrade_async(embedded_scratch_url, "head")
        async with engine.begin() as conn:  # the previous release, on the migrated schema
            await conn.execute(text(impression), {"rid": "after"})
            await conn.execute(text(space), {"through": 2, "vectors": vectors})
        impressions = PostgresImpressionStore(engine)
        for rid in ("before", "after"):
            got = await impressions.get(rid)
            assert got is not None and got.ranker == "blend"
        got_space = await PostgresItemSpaceStore(engine).latest()
        assert got_space is not None and got_space.trained_through == 2
        assert got_space.ranker is None
    finally:
        await engine.dispose()


def test_alembic_ini_serves_the_cli() -> None:
    config = Config(str(REPO / "alembic.ini"))
    script = ScriptDirectory.from_config(config)
    assert Path(script.dir) == REPO / "migrations"
    assert script.get_heads() == ["0010"]  # one linear history, no branches
    assert [Path(s.path).name for s in script.walk_revisions()] == [
        "2026_12_08_0010_items_updated_at.py",
        "2026_12_08_0009_encoder_versions.py",
        "2026_12_07_0008_ranker_and_impression_ranker.py",
        "2026_11_29_0007_impressions.py",
        "2026_11_29_0006_user_keys_and_erasure.py",
        "2026_11_29_0005_event_ids_per_user.py",
        "2026_11_29_0004_api_tokens.py",
        "2026_11_28_0003_item_spaces.py",
        "2026_11_28_0002_item_id_text_features.py",
        "2026_11_28_0001_initial.py",
    ]
