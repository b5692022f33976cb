"""One contract for every Eraser adapter (see portrait.ports): in memory, on the embedded
Postgres in the clear and sealed under users' keys (crypto-shredding), and on the machine's
Postgres (skipped if unreachable).

An erasure reaches into the other stores of its backend, so the tests write through them and
read back what is left."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pytest

from portrait.erasure import ErasureRecord, user_hash
from portrait.events import ItemViewed
from portrait.impression import Impression
from portrait.ports import Eraser, Snapshot, TextFeatures, TextKey
from storage.erasure import InMemoryEraser, PostgresEraser
from storage.stores import Stores
from tests.contract.backends import (
    OnEmbeddedPostgres,
    OnEmbeddedPostgresSealed,
    OnMachinePostgres,
    OnMemory,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
FEATURES = TextFeatures(np.ones(4, np.float32), (("word", 1.0),), model_id="model")


def views(user: str, n: int, prefix: str = "e") -> list[ItemViewed]:
    return [ItemViewed(f"{prefix}{i}", user, 100.0 + i, f"i{i}") for i in range(n)]


async def store_everything(stores: Stores, user: str, n_events: int) -> None:
    """``n_events`` events, two snapshots, three cached features and an impression."""
    await stores.events.append(user, views(user, n_events))
    await stores.snapshots.save_many([Snapshot(user, 1, b"s1", "cfg"),
                                      Snapshot(user, 2, b"s2", "other-cfg")])
    await stores.text_features.put_many(
        {TextKey(user, f"e{i}", "d"): FEATURES for i in range(3)}, "model")
    await stores.impressions.record_many(
        [Impression(f"req-{user}", user, "", "default", "cfg", -1, ("i1",), 100.0)])


class EraserContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has."""

    adapter: ClassVar[type]

    @pytest.fixture
    def eraser(self, stores: Stores) -> Eraser:
        assert isinstance(stores.eraser, self.adapter)
        return stores.eraser

    async def test_nothing_stored_is_nothing_erased(self, eraser: Eraser) -> None:
        assert await eraser.erase("nobody", "ops", 10.0) is None
        assert await eraser.last_erasure("nobody") is None
        assert await eraser.erasure_count() == 0

    async def test_erase_removes_the_user_from_every_store(self, stores: Stores,
                                                           eraser: Eraser) -> None:
        await store_everything(stores, "u1", 5)
        await store_everything(stores, "u2", 2)
        u2_events = await stores.events.read("u2")

        record = await eraser.erase("u1", "ops", 1234.5)
        assert record is not None
        assert (record.user_hash, record.requested_by, record.erased_at) == (
            user_hash("u1"), "ops", 1234.5)
        assert (record.events, record.snapshots, record.text_features) == (5, 2, 3)

        assert await stores.events.version("u1") == 0
        assert await stores.events.read("u1") == []
        assert await stores.events.read_tails({"u1": 0}) == {"u1": []}
        assert [r.event.user_id for r in await stores.events.read_all()] == ["u2", "u2"]
        assert await stores.snapshots.latest("u1", "cfg") is None
        assert await stores.snapshots.latest_many({"u1": "other-cfg"}) == {}
        assert await stores.text_features.get_many([TextKey("u1", "e0", "d")], "model") == {}
        assert await stores.impressions.get("req-u1") is None
        # Nobody else lost anything.
        assert await stores.events.read("u2") == u2_events
        assert await stores.snapshots.latest("u2", "cfg") == Snapshot("u2", 1, b"s1", "cfg")
        assert len(await stores.text_features.get_many([TextKey("u2", "e0", "d")], "model")) == 1
        assert await stores.impressions.get("req-u2") is not None

        assert await eraser.last_erasure("u1") == record
        assert await eraser.last_erasure("u2") is None
        assert await eraser.erasure_count() == 1

    async def test_erasing_again_erases_nothing(self, stores: Stores, eraser: Eraser) -> None:
        await stores.events.append("u1", views("u1", 2))
        first = await eraser.erase("u1", "ops", 10.0)
        assert await eraser.erase("u1", "ops", 20.0) is None
        assert await eraser.last_erasure("u1") == first
        assert await eraser.erasure_count() == 1

    async def test_an_erased_id_starts_afresh(self, stores: Stores, eraser: Eraser) -> None:
        await stores.events.append("u1", views("u1", 3))
        first = await eraser.erase("u1", "ops", 10.0)
        # The same event ids again: new events of a new profile, not duplicates.
        again = await stores.events.append("u1", views("u1", 1))
        assert [(r.seq, r.duplicate) for r in again] == [(1, False)]
        assert [r.event for r in await stores.events.read("u1")] == views("u1", 1)
        second = await eraser.erase("u1", "support", 20.0)
        assert isinstance(first, ErasureRecord) and isinstance(second, ErasureRecord)
        assert second.erasure_id > first.erasure_id and second.events == 1
        assert await eraser.last_erasure("u1") == second
        assert await eraser.erasure_count() == 2


class TestInMemory(OnMemory, EraserContract):
    adapter = InMemoryEraser


class TestEmbeddedPostgres(OnEmbeddedPostgres, EraserContract):
    adapter = PostgresEraser


class TestEmbeddedPostgresSealed(OnEmbeddedPostgresSealed, EraserContract):
    adapter = PostgresEraser


class TestMachinePostgres(OnMachinePostgres, EraserContract):
    adapter = PostgresEraser
