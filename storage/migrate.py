"""Run Portrait's Alembic migrations from code, from any working directory.

``alembic.ini`` at the repository root serves the ``alembic`` CLI; this module builds the same
configuration in code, with the migrations folder as an absolute path.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    """An Alembic :class:`Config` for ``url`` that does not depend on the cwd."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    # ConfigParser interpolation: a literal '%' (e.g. a percent-encoded socket path or
    # password) must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _in_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision``.

    Blocking. migrations/env.py runs its own event loop, so from async code call
    :func:`upgrade_async` instead.
    """
    if _in_loop():
        raise RuntimeError("storage.migrate.upgrade blocks; await upgrade_async() instead")
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` drops everything)."""
    if _in_loop():
        raise RuntimeError("storage.migrate.downgrade blocks; await downgrade_async() instead")
    command.downgrade(alembic_config(url), revision)


async def upgrade_async(url: str, revision: str = "head") -> None:
    """:func:`upgrade`, run in a worker thread so that it may start its own event loop."""
    await asyncio.to_thread(upgrade, url, revision)


async def downgrade_async(url: str, revision: str) -> None:
    """:func:`downgrade`, run in a worker thread so that it may start its own event loop."""
    await asyncio.to_thread(downgrade, url, revision)


__all__ = ["MIGRATIONS_DIR", "alembic_config", "downgrade", "downgrade_async", "upgrade",
           "upgrade_async"]
