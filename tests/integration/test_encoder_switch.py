"""Switching the text encoder over the stores (memory, and the embedded Postgres with users'
data sealed): resumable migration, one atomic switch, a rollback that encodes nothing, and
erased users' texts never encoded again."""

from __future__ import annotations

import numpy as np
import pytest

from actors.dependencies import ConnectedEncoder
from actors.encoder_switch import EncoderSwitch
from actors.text_features import TextFeatureSource, ThreadedEncoder, text_digest
from portrait.catalog import ItemRecord
from portrait.encoder_versions import EncoderVersion
from portrait.errors import InvalidField
from portrait.events import ItemViewed, ReviewWritten, SearchPerformed
from portrait.ports import TextKey
from storage.stores import Stores
from tests.contract.backends import OnEmbeddedPostgresSealed, OnMemory
from tests.fakes import HashingEncoder
from tests.versioned_encoder import BASE_MODEL, Killed, VersionedHashing

pytestmark = pytest.mark.asyncio(loop_scope="session")

ITEMS = [ItemRecord(str(i), f"Film {i}", f"A story about thing {i}.", ("Drama",))
         for i in range(10)]


def new_version(name: str = "tuned") -> EncoderVersion:
    return EncoderVersion(0, name, f"test/{name}", BASE_MODEL, "all-minilm-l6-v2", "/nowhere",
                          16, record={"name": name})


class EncoderSwitchSuite:
    @pytest.fixture
    def encoder(self) -> VersionedHashing:
        return VersionedHashing()

    async def _setup(self, stores: Stores, encoder: VersionedHashing
                     ) -> tuple[EncoderSwitch, EncoderVersion]:
        await stores.catalog(encoder).upsert(ITEMS)
        for user in ("u1", "u2", "u3"):
            events = [
                ItemViewed(f"{user}-v", user, 1.0, "1"),
                ReviewWritten(f"{user}-r", user, 2.0, "2", text=f"{user} loved the ending"),
                SearchPerformed(f"{user}-s", user, 3.0, query=f"{user} space opera"),
            ]
            await stores.events.append(user, events)
            # As a shard does when it folds them: their features cached under the base.
            await TextFeatureSource(stores.text_features, ConnectedEncoder(encoder)
                                    ).features_for(events)
        base = stores.catalog(encoder).base_encoder()
        target = await stores.encoder_versions.register(new_version())
        return EncoderSwitch(stores, encoder, base, item_chunk=4, text_chunk=2), target

    async def test_a_killed_migration_leaves_the_old_encoder_serving_and_resumes(
        self, stores: Stores, encoder: VersionedHashing
    ) -> None:
        switch, target = await self._setup(stores, encoder)
        encoder.fail_after = 4  # three calls for the items, then texts: dies at the second
        with pytest.raises(Killed):
            await switch.switch(target)
        catalog = stores.catalog(encoder)
        assert (await catalog.encoder()).model_id == BASE_MODEL
        index = await catalog.load_index()
        assert index.model_id == BASE_MODEL and len(index) == len(ITEMS)
        assert switch.status.phase == "failed"
        first = len(encoder.texts[target.model_id])

        encoder.fail_after = None
        await switch.switch(target)
        before, resumed = (encoder.texts[target.model_id][:first],
                           encoder.texts[target.model_id][first:])
        # Nothing encoded twice: no item again, and only the texts not cached before the kill
        # (their keyword phrases may repeat: they are not cached on their own).
        whole = {f"{u} loved the ending" for u in ("u1", "u2", "u3")} | {
            f"{u} space opera" for u in ("u1", "u2", "u3")}
        assert whole & set(before) and whole & set(resumed)
        assert not whole & set(before) & set(resumed)
        assert not any(t.startswith("Film") for t in resumed)
        index = await catalog.load_index()
        assert index.model_id == target.model_id and len(index) == len(ITEMS)
        assert (await catalog.encoder()).name == "tuned"
        got = (await stores.encoder_versions.get(target.version))
        assert got is not None and got.state == "active"
        keys = [TextKey(u, f"{u}-{k}", text_digest(t)) for u in ("u1", "u2", "u3")
                for k, t in (("r", f"{u} loved the ending"), ("s", f"{u} space opera"))]
        cached = await stores.text_features.get_many(keys, target.model_id)
        assert set(cached) == set(keys)
        assert {f.model_id for f in cached.values()} == {target.model_id}

    async def test_items_upserted_during_the_migration_are_caught_up_by_the_switch(
        self, stores: Stores, encoder: VersionedHashing
    ) -> None:
        switch, target = await self._setup(stores, encoder)
        await switch.migrate(target)
        late = ItemRecord("late", "Late film", "Added while migrating.", ("Drama",))
        changed = ItemRecord("3", "Film 3", "Its description changed meanwhile.", ("Drama",))
        await stores.catalog(encoder).upsert([late, changed])  # still under the base
        await switch.switch(target)
        index = await stores.catalog(encoder).load_index()
        assert index.model_id == target.model_id and len(index) == len(ITEMS) + 1
        encoded = encoder.texts[target.model_id]
        assert encoded.count("Film 3. Its description changed meanwhile. Drama") <= 1
        row = index.row("3")
        assert row is not None
        want = np.roll((await ThreadedEncoder(HashingEncoder(16, BASE_MODEL)).encode(
            [t for t in encoded if "changed meanwhile" in t])), 1 + target.version, axis=1)[0]
        np.testing.assert_allclose(index.matrix[row], want / np.linalg.norm(want), atol=1e-6)

    async def test_rollback_is_quick_and_encodes_nothing(
        self, stores: Stores, encoder: VersionedHashing
    ) -> None:
        switch, target = await self._setup(stores, encoder)
        base_index = await stores.catalog(encoder).load_index()
        await switch.switch(target)
        before = {m: len(t) for m, t in encoder.texts.items()}
        # Another process (the next `portrait encoder rollback`) knows the base all the same.
        switch = EncoderSwitch(stores, encoder, stores.catalog(encoder).base_encoder())
        pointer = await switch.rollback()
        assert (pointer.version, pointer.previous) == (0, target.version)
        assert {m: len(t) for m, t in encoder.texts.items()} == before  # nothing encoded
        index = await stores.catalog(encoder).load_index()
        assert index.model_id == BASE_MODEL
        np.testing.assert_array_equal(index.matrix, base_index.matrix)
        got = await stores.encoder_versions.get(target.version)
        assert got is not None and got.state == "ready"
        # ...and forward again, as quickly.
        await switch.rollback()
        assert {m: len(t) for m, t in encoder.texts.items()} == before
        assert (await stores.catalog(encoder).load_index()).model_id == target.model_id

    async def test_an_erased_users_texts_are_never_encoded_again(
        self, stores: Stores, encoder: VersionedHashing
    ) -> None:
        switch, target = await self._setup(stores, encoder)
        await stores.eraser.erase("u2", "test", 10.0)
        await switch.switch(target)
        encoded = " ".join(encoder.texts[target.model_id])
        assert "u1 loved" in encoded and "u2" not in encoded

    async def test_register_refuses_a_taken_name_or_model(
        self, stores: Stores, encoder: VersionedHashing
    ) -> None:
        await stores.encoder_versions.register(new_version("a"))
        with pytest.raises(InvalidField) as err:
            await stores.encoder_versions.register(new_version("a"))
        assert err.value.field == "name"
        clash = EncoderVersion(0, "b", "test/a", BASE_MODEL, "all-minilm-l6-v2", None, 16)
        with pytest.raises(InvalidField) as err:
            await stores.encoder_versions.register(clash)
        assert err.value.field == "model_id"
        with pytest.raises(InvalidField):
            await EncoderSwitch(stores, encoder, stores.catalog(encoder).base_encoder()
                                ).rollback()  # nothing to roll back to


class TestOnMemory(OnMemory, EncoderSwitchSuite):
    pass


class TestOnPostgresSealed(OnEmbeddedPostgresSealed, EncoderSwitchSuite):
    pass
