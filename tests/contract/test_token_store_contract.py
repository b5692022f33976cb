"""One contract for every TokenStore adapter (see portrait.ports): in memory, on the embedded
Postgres and on the machine's Postgres (skipped if unreachable)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from portrait.access import ADMIN, TokenRecord
from portrait.errors import InvalidField
from portrait.ports import TokenStore
from storage.stores import Stores
from storage.tokens import InMemoryTokenStore, PostgresTokenStore
from tests.contract.backends import OnEmbeddedPostgres, OnMachinePostgres, OnMemory

pytestmark = pytest.mark.asyncio(loop_scope="session")


def record(name: str, created_at: float, token_id: str | None = None,
           scopes: frozenset[str] = frozenset({"events:write"})) -> TokenRecord:
    return TokenRecord(token_id or f"id-{name}", name, scopes, created_at)


class TokenStoreContract:
    """The tests every adapter must pass; a subclass names the adapter its backend has."""

    adapter: ClassVar[type]

    @pytest.fixture
    def store(self, stores: Stores) -> TokenStore:
        assert isinstance(stores.tokens, self.adapter)
        return stores.tokens

    async def test_empty_store(self, store: TokenStore) -> None:
        assert await store.list() == []
        assert await store.find("nope") is None
        assert await store.revoke("nope", 1.0) is None

    async def test_round_trip_keeps_record_and_digest(self, store: TokenStore) -> None:
        admin = record("ops", 10.0, scopes=frozenset({ADMIN, "metrics:read"}))
        await store.create(admin, b"\x00digest\xff")
        assert await store.find("id-ops") == (admin, b"\x00digest\xff")
        assert await store.find("ops") is None  # found by id, not by name

    async def test_list_is_oldest_first_and_keeps_revoked(self, store: TokenStore) -> None:
        for name, at in (("b", 30.0), ("a", 10.0), ("c", 20.0)):
            await store.create(record(name, at), b"d")
        await store.revoke("c", 40.0)
        listed = await store.list()
        assert [(r.name, r.revoked_at) for r in listed] == [("a", None), ("c", 40.0),
                                                           ("b", None)]

    async def test_a_taken_name_is_refused_and_changes_nothing(self, store: TokenStore) -> None:
        await store.create(record("ci", 1.0), b"first")
        with pytest.raises(InvalidField) as caught:
            await store.create(record("ci", 2.0, token_id="other-id"), b"second")
        assert caught.value.field == "name"
        assert await store.find("other-id") is None
        assert await store.find("id-ci") == (record("ci", 1.0), b"first")
        # A revoked token keeps its name: the name stays taken.
        await store.revoke("ci", 3.0)
        with pytest.raises(InvalidField):
            await store.create(record("ci", 4.0, token_id="third-id"), b"third")

    @pytest.mark.parametrize("by", ["name", "id"])
    async def test_revoke_by_name_or_id(self, store: TokenStore, by: str) -> None:
        await store.create(record("ci", 1.0), b"d")
        await store.create(record("other", 2.0), b"d")
        revoked = await store.revoke("ci" if by == "name" else "id-ci", 5.0)
        assert revoked == TokenRecord("id-ci", "ci", frozenset({"events:write"}), 1.0, 5.0)
        assert revoked is not None and not revoked.allows("events:write")
        found = await store.find("id-ci")
        assert found is not None and found[0] == revoked
        assert (await store.find("id-other"))[0].revoked_at is None  # type: ignore[index]

    async def test_revoking_again_keeps_the_first_time(self, store: TokenStore) -> None:
        await store.create(record("ci", 1.0), b"d")
        await store.revoke("ci", 5.0)
        again = await store.revoke("ci", 9.0)
        assert again is not None and again.revoked_at == 5.0
        assert [r.revoked_at for r in await store.list()] == [5.0]


class TestInMemory(OnMemory, TokenStoreContract):
    adapter = InMemoryTokenStore


class TestEmbeddedPostgres(OnEmbeddedPostgres, TokenStoreContract):
    adapter = PostgresTokenStore


class TestMachinePostgres(OnMachinePostgres, TokenStoreContract):
    adapter = PostgresTokenStore
