"""The learned ranker in the item-space retrain, on the in-memory stores: trained and saved
with the space, refused with a reason, a failure that keeps the space, text events of users
who reuse event ids, a retrain cancelled while the ranker trains."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable

import numpy as np
import pytest

from actors.item_space_trainer import ItemSpaceTrainer
from actors.ranker_trainer import RankerPolicy, RankerTrainer, training_streams
from portrait.config import ProfileConfig
from portrait.events import Event, ItemViewed, SearchPerformed
from portrait.experiments import Experiment
from portrait.item_space import CollabSettings
from portrait.items import ItemIndex, l2_normalise
from portrait.learned_ranker import RankerBundle, RankerSettings
from portrait.ports import TextFeatures
from portrait.ranking import RankingConfig
from portrait.variants import Variant, VariantPolicy
from serve.cli.catalog import ranker_line
from serve.settings import Settings
from storage.item_spaces import InMemoryItemSpaceStore
from storage.memory import InMemoryEventLog

COLLAB = CollabSettings(dim=4, min_count=2, oversample=4)
THEMES = 4
ITEMS = [f"t{t}-{k}" for t in range(THEMES) for k in range(6)]
POLICY = RankerPolicy(
    RankerSettings(min_groups=10, min_data_in_leaf=2, labels_per_user=3, threads=1),
    ProfileConfig(), RankingConfig(), alpha=0.5,
)


class Sources:
    """The catalog's text index and text features, as the stores and encoder would give."""

    def __init__(self, features: dict[str, dict[str, TextFeatures]] | None = None) -> None:
        rng = np.random.default_rng(1)
        self.index = ItemIndex(ITEMS, l2_normalise(rng.normal(size=(len(ITEMS), 8))),
                               [(i.split("-")[0],) for i in ITEMS], model_id="test")
        self.features = features or {}
        self.fail: Exception | None = None
        self.hold: asyncio.Event | None = None
        self.started = asyncio.Event()

    async def catalog_index(self) -> ItemIndex:
        self.started.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            raise self.fail
        return self.index

    async def text_features(
        self, events: Iterable[Event]
    ) -> dict[str, dict[str, TextFeatures]]:
        return self.features


async def walks(users: int) -> InMemoryEventLog:
    log = InMemoryEventLog()
    for u in range(users):
        theme = u % THEMES
        await log.append(f"u{u}", [
            ItemViewed(f"e{k}", f"u{u}", 1000.0 * u + k, f"t{theme}-{(u // THEMES + k) % 6}")
            for k in range(5)])
    return log


async def test_the_ranker_is_trained_and_saved_with_its_space() -> None:
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await walks(48), spaces, COLLAB,
                               ranker=RankerTrainer(POLICY, Sources()))
    space = await trainer.retrain()
    assert space is not None and space.ranker is not None
    stored = await spaces.latest()
    assert stored is not None and stored.ranker == space.ranker  # one row, one version
    bundle = RankerBundle.from_bytes(space.ranker)
    assert bundle.settings == POLICY.settings and set(bundle.item_ids) == set(ITEMS)
    stats = trainer.stats
    assert stats.ranker_trained and stats.ranker_skipped_reason is None
    assert stats.ranker_metrics["groups"] >= 10


async def test_too_little_data_saves_the_space_without_a_ranker_and_says_why() -> None:
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await walks(8), spaces, COLLAB,
                               ranker=RankerTrainer(POLICY, Sources()))
    space = await trainer.retrain()
    assert space is not None and space.ranker is None and space.version == 1
    assert not trainer.stats.ranker_trained
    assert "at least 10" in (trainer.stats.ranker_skipped_reason or "")
    assert trainer.stats.failures == 0 and trainer.stats.retrains == 1


async def test_a_ranker_failure_keeps_the_new_space() -> None:
    sources = Sources()
    sources.fail = RuntimeError("catalog unreadable")
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await walks(48), spaces, COLLAB,
                               ranker=RankerTrainer(POLICY, sources))
    space = await trainer.retrain()
    assert space is not None and space.ranker is None and (await spaces.latest()) == space
    reason = trainer.stats.ranker_skipped_reason or ""
    assert reason.startswith("failed: RuntimeError") and "catalog unreadable" in reason


async def test_a_retrain_cancelled_while_the_ranker_trains_saves_nothing() -> None:
    sources = Sources()
    sources.hold = asyncio.Event()
    spaces = InMemoryItemSpaceStore()
    trainer = ItemSpaceTrainer(await walks(48), spaces, COLLAB,
                               ranker=RankerTrainer(POLICY, sources))
    task = asyncio.ensure_future(trainer._run(None))
    await sources.started.wait()  # the space is trained, the ranker's inputs being read
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await spaces.latest() is None and trainer.stats.retrains == 0


def test_text_events_of_users_reusing_an_event_id_keep_their_own_features() -> None:
    a = TextFeatures(np.ones(4, np.float32), model_id="m")
    b = TextFeatures(-np.ones(4, np.float32), model_id="m")
    events: dict[str, list[Event]] = {
        "ann": [ItemViewed("e2", "ann", 5.0, "x"), SearchPerformed("s1", "ann", 1.0, "cats")],
        "bob": [SearchPerformed("s1", "bob", 2.0, "dogs"), SearchPerformed("s2", "bob", 3.0, "?")],
    }
    streams, texts = training_streams(events, {"ann": {"s1": a}, "bob": {"s1": b}})
    ann, bob = streams["ann"], streams["bob"]
    assert [type(e).__name__ for e in ann] == ["SearchPerformed", "ItemViewed"]  # time order
    assert texts[ann[0].event_id] is a and texts[bob[0].event_id] is b
    assert len(bob) == 1  # s2 had no features: left out, not a failed retrain


def test_the_settings_give_the_trainer_its_ranker_settings() -> None:
    s = Settings(ranker_min_groups=7, ranker_threads=3, ranker_candidates=50)
    got = s.ranker.ranker_settings()
    assert got is not None and (got.min_groups, got.threads, got.candidates) == (7, 3, 50)
    assert Settings(ranker_enabled=False).ranker.ranker_settings() is None
    with pytest.raises(ValueError, match="threads"):
        RankerSettings(threads=0)


def test_train_items_says_whether_a_ranker_was_trained() -> None:
    trained = ranker_line(True, None, {"groups": 41.0, "validation_ndcg10": 0.5, "rounds": 12.0},
                          enabled=True)
    assert "41 users" in trained and "0.5000" in trained and "12 rounds" in trained
    refused = ranker_line(False, "3 users ...", {}, enabled=True)
    assert "not trained (3 users ...)" in refused
    assert "off" in ranker_line(False, None, {}, enabled=False)


def test_the_ranker_serves_one_variant_and_an_experiment_without_a_default_keeps_its_own() -> None:
    # An experiment compares its variants as configured: one learned ranker ranking every
    # variant's list alike would hide the difference it measures.
    plain = Variant("default", ProfileConfig(), RankingConfig())
    other = Variant("popular", ProfileConfig(), RankingConfig(popularity_weight=5.0))
    assert VariantPolicy({"default": plain}).learned() is plain
    split = Experiment("exp", (("default", 50), ("popular", 50)))
    assert VariantPolicy({"default": plain, "popular": other}, split).learned() is plain
    named = Experiment("exp", (("tuned", 50), ("popular", 50)))
    tuned = dataclasses.replace(plain, name="tuned")
    assert VariantPolicy({"tuned": tuned, "popular": other}, named).learned() is None


async def test_a_skipped_item_space_names_why_no_ranker_was_trained() -> None:
    """Found on a fresh `./dev run`: a retrain over one user's events skipped the space and
    GET /v1/item-space said nothing about the ranker."""
    trainer = ItemSpaceTrainer(await walks(1), InMemoryItemSpaceStore(), COLLAB,
                               ranker=RankerTrainer(POLICY, Sources()))
    assert await trainer.retrain() is None
    assert not trainer.stats.ranker_trained
    assert "no item space was trained" in (trainer.stats.ranker_skipped_reason or "")
