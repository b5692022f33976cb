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

from actors.catalog_view import CatalogView, ViewKey, newer

REGISTRY_NAME = "portrait-catalog"
NAMESPACE = "portrait"


@ray.remote(num_cpus=0, max_restarts=-1)
class CatalogRegistry:
    """Holds ``(key, [index_ref, extras_ref, space_ref])``; refs are kept nested so Ray passes
    them through unresolved and each reader fetches the shared object itself."""

    def __init__(self) -> None:
        self._key: ViewKey = (-1, -1, -1)
        self._refs: list[Any] = []

    def publish(self, key: ViewKey, refs: list[Any]) -> bool:
        """Record ``key`` if it supersedes the current one. Returns whether it did."""
        key = (int(key[0]), int(key[1]), int(key[2]))
        if self._refs and not newer(key, self._key):
            return False
        self._key, self._refs = key, refs
        return True

    def current(self) -> tuple[ViewKey, list[Any]]:
        return self._key, self._refs


def get_or_create_registry() -> Any:
    """The cluster's registry actor (detached: it outlives the replica that created it)."""
    return CatalogRegistry.options(  # type: ignore[attr-defined]  # added by @ray.remote
        name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RegistryChannel:
    """:class:`~actors.catalog_view.CatalogSink` and ``CatalogFeed`` over the registry actor.

    A publisher's channel remembers what it last put into the object store, so a view that
    differs only in popularity shares the index and item-space objects instead of copying
    the matrices again; it pickles (into every shard) without that memory."""

    def __init__(self) -> None:
        self._put: tuple[tuple[int, int], list[Any]] | None = None

    def __reduce__(self) -> tuple[type[RegistryChannel], tuple[()]]:
        return (RegistryChannel, ())

    async def publish(self, view: CatalogView) -> bool:
        index, extras, space = view.to_parts()
        last = self._put
        if last is not None and last[0] == view.key[:2]:
            refs = [last[1][0], ray.put(extras), last[1][2]]
        else:
            refs = [ray.put(index), ray.put(extras), ray.put(space)]
        self._put = (view.key[:2], refs)
        return bool(await get_or_create_registry().publish.remote(view.key, refs))

    async def latest(self, newer_than: ViewKey = (-1, -1, -1)) -> CatalogView | None:
        key, refs = await get_or_create_registry().current.remote()
        if not refs or tuple(key) == tuple(newer_than):
            return None
        index, extras, space = await asyncio.gather(*refs)
        return CatalogView.from_parts(tuple(key), index, extras, space)
