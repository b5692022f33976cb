"""Reads of a running service's database, to check what it wrote against what it answers."""

from __future__ import annotations

from typing import Any


async def recorded_events(url: str, user: str) -> list[Any]:
    """The user's events as the log holds them (decrypted with this process's keys)."""
    from storage.database import create_engine
    from storage.postgres import PostgresEventLog
    from storage.user_keys import UserKeys

    engine = create_engine(url)
    try:
        return await PostgresEventLog(engine, keys=UserKeys.from_environment()).read(user)
    finally:
        await engine.dispose()


async def catalog_index(url: str) -> Any:
    """The catalog's item index as the service loads it."""
    from encoding.settings import DEFAULT_MODEL_ID
    from storage.catalog import ItemCatalog
    from storage.database import create_engine
    from storage.postgres_catalog import PostgresCatalogStore

    class ModelOnly:  # load_index needs only the model id and dimension
        model_id, dim = DEFAULT_MODEL_ID, 384

    engine = create_engine(url)
    try:
        return await ItemCatalog(PostgresCatalogStore(engine), ModelOnly()).load_index()  # type: ignore[arg-type]
    finally:
        await engine.dispose()
