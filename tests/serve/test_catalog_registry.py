"""The catalog registry on Ray: a base in the object store, deltas after it, a reader that
holds the base fetching only the deltas it lacks, and a compaction that swaps the base under
readers without changing the rows they rank."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import ray

from actors.catalog_registry import RegistryChannel, get_or_create_registry
from actors.catalog_view import CatalogDelta, CatalogView
from portrait.items import ItemIndex, l2_normalise

pytestmark = pytest.mark.asyncio(loop_scope="session")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             namespace="portrait", runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    try:
        yield
    finally:
        ray.shutdown()
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)


def _base(n: int = 6) -> CatalogView:
    rng = np.random.default_rng(0)
    items = ItemIndex([f"i{k}" for k in range(n)], l2_normalise(rng.normal(size=(n, 8))),
                      [("a",)] * n, model_id="m")
    return CatalogView(1, items, np.linspace(0, 1, n).astype(np.float32), None,
                       [f"Item {k}" for k in range(n)])


def _delta(after: CatalogView, version: int, ids: list[str]) -> CatalogDelta:
    rng = np.random.default_rng(version)
    return CatalogDelta(after.key, (version, *after.key[1:]), tuple(ids),
                        l2_normalise(rng.normal(size=(len(ids), 8))), tuple(() for _ in ids),
                        tuple(f"new {i}" for i in ids), np.zeros(len(ids), np.float32))


async def test_readers_get_deltas_and_a_compacted_base(cluster: None) -> None:
    channel = RegistryChannel()
    base = _base()
    mapped = await channel.shared(base)
    assert mapped is not None and mapped.key == base.key
    reader = await channel.latest()
    assert reader is not None and len(reader.items) == 6

    d1 = _delta(mapped, 2, ["i1", "n1"])  # a change and a new item
    grown = mapped.with_delta(d1)
    assert await channel.publish_delta(grown, d1)
    d2 = _delta(grown, 3, ["n2"])
    grown2 = grown.with_delta(d2)
    assert await channel.publish_delta(grown2, d2)
    # A delta on a view the registry does not hold is refused (the caller republishes).
    assert not await channel.publish_delta(grown2, _delta(grown, 9, ["x"]))

    updated = await channel.latest(reader)
    assert updated is not None and updated.key == grown2.key
    assert updated.items.base_matrix is reader.items.base_matrix  # the base was not fetched
    assert updated.items.row("i1") == 6 and updated.title("n2") == "new n2"
    assert await channel.latest(updated) is None  # up to date: nothing fetched

    # Popularity alone moves: the extras over every row.
    popular = grown2.with_popularity(np.arange(len(grown2.items), dtype=np.float32),
                                     grown2.key[2] + 5)
    assert await channel.publish(popular)
    moved = await channel.latest(updated)
    assert moved is not None and moved.popularity is not None
    assert moved.popularity[8] == 8 and moved.key == popular.key

    # Compaction up to d1: the base becomes the flattened chain, d2 stays after it.
    flat = grown.flattened()
    current = await channel.compact(flat, [d2])
    assert current is not None and current.key == popular.key
    assert current.items.n_base == 8 and current.tail == 1
    again = await channel.latest(moved)
    assert again is not None and again.items.n_base == 8 and again.base_key == grown.key
    assert [again.items.row(i) for i in ("i1", "n1", "n2")] == [6, 7, 8]
    assert again.items.alive is not None and not again.items.alive[1]
    assert again.popularity is not None and again.popularity[8] == 8
    np.testing.assert_array_equal(again.items.vectors([6, 8]), moved.items.vectors([6, 8]))
    # A compaction of a chain the registry no longer holds is refused.
    assert await channel.compact(_base(3).flattened(), []) is None
    ray.kill(get_or_create_registry())
