"""The catalog across a Ray cluster: a registry actor that knows the current version.

The catalog (item ids, the item matrix, tags, popularity, the tag vocabulary) is put into Ray's
object store once per version; every shard on a node then maps the same bytes (zero-copy numpy
views) instead of loading its own copy. Shards ask the registry for the current version when
they start (including after Ray restarts them) and whenever the ingress tells them it changed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import ray

from actors.catalog_view import CatalogDelta, CatalogView, ViewKey, newer

REGISTRY_NAME = "portrait-catalog"
NAMESPACE = "portrait"


@ray.remote(num_cpus=0, max_restarts=-1, enable_task_events=False)  # type: ignore[call-overload]  # see ProfileShard
class CatalogRegistry:
    """Holds the current view as a base (``[index_ref, extras_ref, space_ref]``), the deltas
    published since (``[(key, delta_ref)]``) and the newest extras (popularity, vocabulary);
    refs are kept nested so Ray passes them through unresolved and each reader fetches the
    shared objects itself, and only those it lacks.

    The registry puts the parts into the object store itself, so it owns them: they live as
    long as it does, not as long as the process that published them (a shard restarted
    after that process died could not load its catalog). If the registry itself restarts it
    comes back empty, and the next publication (the publisher checks, see
    :meth:`RegistryChannel.current_key`) fills it again.
    """

    def __init__(self) -> None:
        self._key: ViewKey = (-1, -1, -1)
        self._base_key: ViewKey = (-1, -1, -1)
        self._refs: list[Any] = []
        self._deltas: list[tuple[ViewKey, Any]] = []
        self._extras: Any = None  # the newest popularity and vocabulary (over every row)

    def publish(self, key: ViewKey, parts: list[Any]) -> str:
        """Make ``key`` current if it supersedes ours. A part given as None is the current
        view's (only popularity moved: the extras alone are sent, and the view keeps its base
        and deltas).

        Returns ``"published"``, ``"stale"`` (ours is as new or newer) or ``"need-parts"``
        (a part was left out that we do not hold: send them all).
        """
        key = (int(key[0]), int(key[1]), int(key[2]))
        if self._refs and not newer(key, self._key):
            return "stale"
        if any(p is None for p in parts):
            if not self._refs or self._key[:2] != key[:2]:
                return "need-parts"
            self._extras = ray.put(parts[1])
            self._key = key
            return "published"
        self._refs = [ray.put(p) for p in parts]
        self._extras = self._refs[1]
        self._key = self._base_key = key
        self._deltas = []
        return "published"

    def publish_delta(self, after: ViewKey, key: ViewKey, delta: Any) -> str:
        """Append a delta to the current view if that view is ``after``; ``"need-parts"``
        when it is not (we restarted empty, or another view went out)."""
        key = (int(key[0]), int(key[1]), int(key[2]))
        if not self._refs or self._key != tuple(int(k) for k in after):
            return "need-parts"
        self._deltas.append((key, ray.put(delta)))
        self._key = key
        return "published"

    def compact(self, base_key: ViewKey, parts: list[Any]) -> str:
        """Make ``parts`` (our chain flattened up to ``base_key``, rows in the same order)
        the base, keeping the deltas after it; the current key stays. ``"stale"`` when
        ``base_key`` is not a point of our chain (another view went out meanwhile)."""
        base_key = (int(base_key[0]), int(base_key[1]), int(base_key[2]))
        chain = [self._base_key, *(tuple(k) for k, _ in self._deltas)]
        if not self._refs or base_key not in chain:
            return "stale"
        old_extras = self._refs[1]
        self._refs = [ray.put(p) for p in parts]
        if self._extras is old_extras:  # no popularity since the old base: the new one's
            self._extras = self._refs[1]
        self._base_key = base_key
        self._deltas = [(k, ref) for k, ref in self._deltas if tuple(k)[0] > base_key[0]]
        return "published"

    def current(self) -> tuple[ViewKey, ViewKey, list[Any], list[tuple[ViewKey, Any]], Any]:
        """(current key, base key, base refs, deltas after the base, newest extras)."""
        return self._key, self._base_key, self._refs, self._deltas, self._extras


def get_or_create_registry() -> Any:
    """The cluster's registry actor (detached: it outlives the replica that created it)."""
    return CatalogRegistry.options(  # type: ignore[attr-defined]  # added by @ray.remote
        name=REGISTRY_NAME, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
    ).remote()


class RegistryChannel:
    """:class:`~actors.catalog_view.CatalogSink` and ``CatalogFeed`` over the registry actor.

    A view that differs from the last one this channel sent only in popularity is sent as its
    extras alone (the registry keeps the rest); stateless otherwise, so it pickles into every
    shard without that memory.
    """

    def __init__(self) -> None:
        self._sent: tuple[int, int] | None = None

    def __reduce__(self) -> tuple[type[RegistryChannel], tuple[()]]:
        return (RegistryChannel, ())

    async def publish(self, view: CatalogView) -> bool:
        registry = get_or_create_registry()
        if self._sent == view.key[:2]:
            status = await registry.publish.remote(view.key, [None, view.extras(), None, None])
        else:
            status = "need-parts"
        if status == "need-parts":
            status = await registry.publish.remote(view.key, list(view.to_parts()))
        if status == "published":
            self._sent = view.key[:2]
        return bool(status == "published")

    async def compact(
        self, flat: CatalogView, later: Sequence[CatalogDelta]
    ) -> CatalogView | None:
        status = await get_or_create_registry().compact.remote(flat.key, list(flat.to_parts()))
        return await self.latest() if status == "published" else None

    async def shared(self, view: CatalogView) -> CatalogView | None:
        """The publisher then holds the object store's pages (shared with the shards on its
        node) instead of its own copy of the catalog."""
        if not await self.publish(view):
            return None
        mapped = await self.latest()
        if mapped is None or mapped.key != view.key:
            return view  # another view went out meanwhile: keep ours
        mapped.ranker = view.ranker
        return mapped

    async def publish_delta(self, view: CatalogView, delta: CatalogDelta) -> bool:
        status = await get_or_create_registry().publish_delta.remote(delta.after, delta.key,
                                                                     delta)
        if status == "published":
            self._sent = view.key[:2]
        return bool(status == "published")

    async def current_key(self) -> ViewKey:
        key, *_ = await get_or_create_registry().current.remote()
        return (int(key[0]), int(key[1]), int(key[2]))

    async def latest(self, mine: CatalogView | None = None) -> CatalogView | None:
        key, base_key, refs, deltas, newest = await get_or_create_registry().current.remote()
        key, base_key = tuple(key), tuple(base_key)
        if not refs or (mine is not None and (mine.key, mine.base_key) == (key, base_key)):
            return None
        view = mine
        if view is None or view.base_key != base_key or view.version > key[0]:
            index, extras, space, indexes = await asyncio.gather(*refs)
            view = CatalogView.from_parts(base_key, index, extras, space, indexes)
        missing = [(k, ref) for k, ref in deltas if tuple(k)[0] > view.version]
        for delta in await asyncio.gather(*(ref for _, ref in missing)):
            view = view.with_delta(delta)
        if view.key != key and view.key[:2] == key[:2]:  # popularity moved since
            popularity, _, _ = await newest
            view = view.with_popularity(popularity, key[2])
        return view
