"""Alembic environment: runs Portrait's migrations on an asyncpg engine.

The URL is the config's ``sqlalchemy.url`` (set by :mod:`storage.migrate`) or, when that is
empty (the ``alembic`` CLI with the shipped ``alembic.ini``), ``$PORTRAIT_DATABASE_URL``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from storage.database import async_url
from storage.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    # `portrait migrate` passes the URL in; a bare `alembic upgrade head` reads the setting.
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from serve.settings import load_settings

        url = load_settings().storage.database_url
    if not url:
        raise RuntimeError("no database URL: set sqlalchemy.url or PORTRAIT_DATABASE_URL")
    return async_url(url)


def run_migrations_offline() -> None:
    """Emit the migration SQL to stdout (``alembic upgrade head --sql``)."""
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    """Run the migrations on a fresh engine, in one transaction (Postgres DDL is transactional)."""
    # NullPool: a migration is a one-off; no connection should outlive it.
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_on)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
