"""A shard asked to serve before any catalog is published answers a retryable error."""

from __future__ import annotations

import pytest

from actors.catalog_view import LocalCatalogChannel
from actors.dependencies import ConnectedEncoder
from actors.shard_service import ShardService, ShardSettings
from actors.text_features import ThreadedEncoder
from portrait.errors import NotReady
from storage.stores import StoreFactory, forget_memory
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_no_catalog_yet_is_not_ready_not_a_crash() -> None:
    """A shard restarted while the catalog registry was empty (both on a node that died)
    raised RuntimeError: a bare 500 to the client instead of a 503 to retry."""
    url = "memory://shard-no-catalog"
    shard = ShardService("s0", StoreFactory(url),
                         ConnectedEncoder(ThreadedEncoder(HashingEncoder(dim=32))),
                         LocalCatalogChannel(), ShardSettings())
    try:
        with pytest.raises(NotReady):
            await shard.ready()
    finally:
        await shard.close()
        forget_memory(url)
