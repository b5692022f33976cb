"""The catalog across a Ray cluster: a registry actor that knows the current version.

The catalog (item ids, the item matrix, tags, popularity, the tag vocabulary) is put into Ray's
object store once per version; every shard on a node then maps the same bytes (zero-copy numpy
views) instead of loading its own copy. Shards ask the registry for the current version when
they start (including after Ray restarts them) and whenever the ingress tells them it changed.
"""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from actors.catalog_view import CatalogView

REGISTRY_NAME = "portrait-catalog"
NAMESPACE = "portrait"


@ray.remote(num_cpus=0, max_restarts=-1)
class CatalogRegistry:
    """Holds ``(version, [index_ref, extras_ref])``; refs are kept nested so Ray passes them
    through unresolved and each reader fetches the shared object itself."""

    def __init__(self) -> None:
        self._version = -1
        self._refs: list[Any] = []

    def publish(self, version: int, refs: list[Any]) -> bool:
        """Record ``version`` if it is newer than the current one. Returns whether it was."""
        if version <= self._version:
            return False
        self._version, self._refs = version, refs
        return True

    def current(self) -> tuple[int, list[Any]]:
        return self._version, self._refs


def get_or_create_registry() -> Any:
    """The cluster's registry actor (detached: it outlives the replica that created it)."""
    return CatalogRegistry.options(
        name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RegistryChannel:
    """:class:`~actors.catalog_view.CatalogSink` and ``CatalogFeed`` over the registry actor.
    Stateless, so it pickles into every shard."""

    async def publish(self, view: CatalogView) -> bool:
        index, extras = view.to_parts()
        refs = [ray.put(index), ray.put(extras)]
        return bool(await get_or_create_registry().publish.remote(view.version, refs))

    async def latest(self, newer_than: int = -1) -> CatalogView | None:
        version, refs = await get_or_create_registry().current.remote()
        if not refs or version <= newer_than:
            return None
        index, extras = await asyncio.gather(*refs)
        return CatalogView.from_parts(version, index, extras)
