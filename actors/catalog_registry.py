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


@ray.remote(num_cpus=0, max_restarts=-1, enable_task_events=False)  # type: ignore[call-overload]  # see ProfileShard
class CatalogRegistry:
    """Holds ``(key, [index_ref, extras_ref, space_ref])``; refs are kept nested so Ray passes
    them through unresolved and each reader fetches the shared object itself.

    The registry puts the parts into the object store itself, so it owns them: they live as
    long as it does, not as long as the ingress replica that published them (a shard restarted
    after that replica died could not load its catalog). If the registry itself restarts it
    comes back empty, and the next publication (the ingress checks, see
    :meth:`RegistryChannel.current_key`) fills it again.
    """

    def __init__(self) -> None:
        self._key: ViewKey = (-1, -1, -1)
        self._refs: list[Any] = []

    def publish(self, key: ViewKey, parts: list[Any]) -> str:
        """Make ``key`` current if it supersedes ours. A part given as None is the current
        view's (index and item space are unchanged when only popularity moved).

        Returns ``"published"``, ``"stale"`` (ours is as new or newer) or ``"need-parts"``
        (a part was left out that we do not hold: send them all).
        """
        key = (int(key[0]), int(key[1]), int(key[2]))
        if self._refs and not newer(key, self._key):
            return "stale"
        if any(p is None for p in parts) and (not self._refs or self._key[:2] != key[:2]):
            return "need-parts"
        self._refs = [self._refs[i] if p is None else ray.put(p) for i, p in enumerate(parts)]
        self._key = key
        return "published"

    def current(self) -> tuple[ViewKey, list[Any]]:
        return self._key, self._refs


def get_or_create_registry() -> Any:
    """The cluster's registry actor (detached: it outlives the replica that created it)."""
    return CatalogRegistry.options(  # type: ignore[attr-defined]  # added by @ray.remote
        name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RegistryChannel:
    """:class:`~actors.catalog_view.CatalogSink` and ``CatalogFeed`` over the registry actor.

    A view that differs from the last one this channel sent only in popularity is sent without
    its index and item-space parts (the registry keeps its own); stateless otherwise, so it
    pickles into every shard without that memory.
    """

    def __init__(self) -> None:
        self._sent: tuple[int, int] | None = None

    def __reduce__(self) -> tuple[type[RegistryChannel], tuple[()]]:
        return (RegistryChannel, ())

    async def publish(self, view: CatalogView) -> bool:
        registry = get_or_create_registry()
        index, extras, space = view.to_parts()
        parts: list[Any] = [index, extras, space]
        if self._sent == view.key[:2]:
            parts = [None, extras, None]
        status = await registry.publish.remote(view.key, parts)
        if status == "need-parts":
            status = await registry.publish.remote(view.key, [index, extras, space])
        if status == "published":
            self._sent = view.key[:2]
        return bool(status == "published")

    async def current_key(self) -> ViewKey:
        key, _ = await get_or_create_registry().current.remote()
        return (int(key[0]), int(key[1]), int(key[2]))

    async def latest(self, newer_than: ViewKey = (-1, -1, -1)) -> CatalogView | None:
        key, refs = await get_or_create_registry().current.remote()
        if not refs or tuple(key) == tuple(newer_than):
            return None
        index, extras, space = await asyncio.gather(*refs)
        return CatalogView.from_parts(tuple(key), index, extras, space)
