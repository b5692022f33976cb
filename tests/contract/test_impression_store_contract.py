"""One contract for every ImpressionStore adapter (see portrait.ports): in memory, on the
embedded Postgres and on the machine's Postgres (skipped if unreachable)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from portrait.impression import INTERLEAVE, Impression
from portrait.ports import ImpressionStore
from storage.impression_store import InMemoryImpressionStore, PostgresImpressionStore
from storage.stores import Stores
from tests.contract.backends import OnEmbeddedPostgres, OnMachinePostgres, OnMemory

pytestmark = pytest.mark.asyncio(loop_scope="session")


def served(request_id: str, user: str = "u1", at: float = 100.0, experiment: str = "exp",
           items: tuple[str, ...] = ("i1", "i2", "i3")) -> Impression:
    return Impression(request_id, user, experiment, "control", "cfg-hash", -1, items, at)


class ImpressionStoreContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has."""

    adapter: ClassVar[type]

    @pytest.fixture
    def store(self, stores: Stores) -> ImpressionStore:
        assert isinstance(stores.impressions, self.adapter)
        return stores.impressions

    async def test_empty_cases(self, store: ImpressionStore) -> None:
        await store.record_many([])  # nothing to do is not an error
        assert await store.get("nope") is None
        assert await store.for_experiment("exp") == []
        assert await store.set_shown("nope", ["i1"]) is False
        assert await store.forget_user("u1") == 0

    async def test_round_trip_every_field(self, store: ImpressionStore) -> None:
        plain = served("r1")
        mixed = Impression("r2", "u2", "exp", INTERLEAVE, "cfg", 7, ("a", "b"), 101.5,
                           teams=("control", "treatment"), shown=("a",), ranker="learned:7")
        empty = served("r3", items=())
        await store.record_many([plain, mixed, empty])
        assert await store.get("r1") == plain
        assert await store.get("r2") == mixed
        assert await store.get("r3") == empty
        assert plain.ranker == "blend"  # the default: the linear blend served
        assert await store.for_experiment("exp") == [plain, empty, mixed]  # the listing too

    async def test_recording_an_id_again_keeps_the_first(self, store: ImpressionStore) -> None:
        first = served("r1")
        await store.record_many([first])
        # A batch re-sent after a lost acknowledgement, with a new one in it.
        await store.record_many([dataclasses.replace(first, items=("x",)), served("r2")])
        assert await store.get("r1") == first
        assert await store.get("r2") == served("r2")

    async def test_for_experiment_is_oldest_first(self, store: ImpressionStore) -> None:
        await store.record_many([served("b", at=30.0), served("a", at=10.0),
                                 served("z", at=20.0), served("y", at=20.0),
                                 served("other", at=5.0, experiment="exp2")])
        assert [i.request_id for i in await store.for_experiment("exp")] == ["a", "y", "z", "b"]
        assert [i.request_id for i in await store.for_experiment("exp2")] == ["other"]
        assert await store.for_experiment("none") == []

    async def test_set_shown(self, store: ImpressionStore) -> None:
        await store.record_many([served("r1"), served("r2")])
        assert await store.set_shown("r1", ["i2", "i1"]) is True
        assert (await store.get("r1")) == dataclasses.replace(served("r1"), shown=("i2", "i1"))
        assert await store.set_shown("r1", []) is True  # shown nothing: not "everything"
        assert (await store.get("r1")).shown == ()  # type: ignore[union-attr]
        assert (await store.get("r2")).shown is None  # type: ignore[union-attr]
        learned = dataclasses.replace(served("r3"), ranker="learned:4")
        await store.record_many([learned])
        assert await store.set_shown("r3", ["i1"]) is True  # the ranker survives the update
        assert await store.get("r3") == dataclasses.replace(learned, shown=("i1",))

    async def test_forget_user_deletes_only_theirs(self, store: ImpressionStore) -> None:
        await store.record_many([served("r1"), served("r2", at=101.0), served("r3", user="u2")])
        assert await store.forget_user("u1") == 2
        assert await store.get("r1") is None and await store.get("r2") is None
        assert [i.request_id for i in await store.for_experiment("exp")] == ["r3"]
        assert await store.set_shown("r1", ["i1"]) is False
        assert await store.forget_user("u1") == 0


class TestInMemory(OnMemory, ImpressionStoreContract):
    adapter = InMemoryImpressionStore


class TestEmbeddedPostgres(OnEmbeddedPostgres, ImpressionStoreContract):
    adapter = PostgresImpressionStore


class TestMachinePostgres(OnMachinePostgres, ImpressionStoreContract):
    adapter = PostgresImpressionStore
