"""Training the learned ranker in the item-space retrain (no Ray in here).

:class:`RankerTrainer` gets the users' events the retrain read from the log and the item
space it just trained, and trains :func:`portrait.ranker_training.train_bundle` (the
evaluation's function) off the event loop, in the blended index of the served default
variant's collaborative share: the rows and vectors its features are computed in when it
serves. The caller saves the bundle's bytes in the same item-space row, so one version names
both and a retrain killed midway publishes neither.

Too little data (:class:`~portrait.learned_ranker.NotEnoughTraining`) and any other failure
both give no ranker and a reason: the item space is saved all the same, and the blend keeps
serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from actors.dependencies import EncoderConnector
from actors.text_features import TextFeatureSource
from portrait.blended import blended_index
from portrait.config import ProfileConfig
from portrait.errors import PortraitError
from portrait.events import Event, event_text
from portrait.item_space import ItemSpace
from portrait.items import ItemIndex
from portrait.learned_ranker import NotEnoughTraining, RankerSettings
from portrait.ports import AsyncEncoder, TextFeatures, TextFeatureStore
from portrait.progress import Progress
from portrait.ranker_training import train_bundle
from portrait.ranking import RankingConfig, TagTable
from storage.catalog import ItemCatalog

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerPolicy:
    """What the ranker is trained with (plain data: Ray ships it): its settings, and the
    served default variant's fold, ranking and collaborative share."""

    settings: RankerSettings
    profile: ProfileConfig
    ranking: RankingConfig
    alpha: float


@dataclass(frozen=True)
class RankerOutcome:
    """One retrain's ranker: its bytes, or None and why not."""

    ranker: bytes | None
    skipped_reason: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


class RankerSources(Protocol):
    """What training reads besides the log: the catalog's text index and the text events'
    features."""

    async def catalog_index(self) -> ItemIndex: ...

    async def text_features(
        self, events: Iterable[Event]
    ) -> dict[str, dict[str, TextFeatures]]:
        """By user, then event id (as :meth:`TextFeatureSource.features_for`)."""
        ...


class CatalogRankerSources:
    """:class:`RankerSources` over the stores and the encoder: the catalog's index as the view
    builder loads it, the features the shards cached when they folded the text events (the
    encoder encodes what the cache lacks)."""

    def __init__(
        self, catalog: CatalogOpener, text_features: TextFeatureStore,
        connector: EncoderConnector,
    ) -> None:
        self._catalog = catalog
        self._texts = TextFeatureSource(text_features, connector)
        self._connector = connector

    async def catalog_index(self) -> ItemIndex:
        return await self._catalog.catalog(await self._connector.connect()).load_index()

    async def text_features(
        self, events: Iterable[Event]
    ) -> dict[str, dict[str, TextFeatures]]:
        # Under the active encoder version, like the catalog index: one text space.
        catalog = self._catalog.catalog(await self._connector.connect())
        return await self._texts.features_for(events, await catalog.encoder())


class CatalogOpener(Protocol):
    def catalog(self, encoder: AsyncEncoder) -> ItemCatalog: ...


class RankerTrainer:
    """Trains one ranker per retrain; see the module docstring."""

    def __init__(self, policy: RankerPolicy, sources: RankerSources) -> None:
        self.policy = policy
        self._sources = sources

    async def train(
        self, events: Mapping[str, Sequence[Event]], space: ItemSpace,
        progress: Progress | None = None,
    ) -> RankerOutcome:
        """A ranker for the users' ``events`` (each user's, in any order) in ``space``.

        Never raises but for cancellation: a failure is an outcome without a ranker."""
        try:
            return await self._train(events, space, progress)
        except NotEnoughTraining as exc:
            _log.warning("learned ranker not trained: %s", exc)
            return RankerOutcome(None, str(exc))
        except Exception as exc:  # the item space is saved all the same; say why
            _log.exception("learned ranker training failed; the blend keeps serving")
            return RankerOutcome(None, f"failed: {type(exc).__name__}: {exc}"[:500])

    async def _train(
        self, events: Mapping[str, Sequence[Event]], space: ItemSpace,
        progress: Progress | None,
    ) -> RankerOutcome:
        index = await self._sources.catalog_index()
        if len(index) == 0:
            raise NotEnoughTraining("the catalog has no items embedded by the current encoder")
        streams, texts = await self._streams(events)
        policy = self.policy
        items = blended_index(index, space, policy.alpha) if policy.alpha > 0 else index
        bundle = await asyncio.to_thread(
            train_bundle, streams, items, TagTable(items), texts, policy.profile,
            policy.ranking, policy.settings, progress,
        )
        metrics = dict(bundle.metrics)
        _log.info("learned ranker: %d groups, validation NDCG@10 %.4f",
                  int(metrics.get("groups", 0)), metrics.get("validation_ndcg10", float("nan")))
        return RankerOutcome(bundle.to_bytes(), None, metrics)

    async def _streams(
        self, events: Mapping[str, Sequence[Event]]
    ) -> tuple[dict[str, tuple[Event, ...]], dict[str, TextFeatures]]:
        wanted = [e for evs in events.values() for e in evs if event_text(e) is not None]
        found: dict[str, dict[str, TextFeatures]] = {}
        if wanted:
            try:
                found = await self._sources.text_features(wanted)
            except PortraitError as exc:
                _log.warning("learned ranker trains without text events: %s", exc)
        return training_streams(events, found)


def training_streams(
    events: Mapping[str, Sequence[Event]], found: Mapping[str, Mapping[str, TextFeatures]]
) -> tuple[dict[str, tuple[Event, ...]], dict[str, TextFeatures]]:
    """Each user's events in time order (``(occurred_at, event_id)``, as the evaluation
    orders them), and the features of their text events (``found``: by user, then event id).

    The fold looks a text event's features up by event id, and event ids are unique per user
    only: each text event is renamed ``t<n>``, unique in this retrain (only attribute events
    are ordered by id within a time, and they keep theirs). A text event without features (no
    encoder answered) is left out: the ranker then learns without those words rather than
    not at all.
    """
    texts: dict[str, TextFeatures] = {}
    streams: dict[str, tuple[Event, ...]] = {}
    for user, evs in events.items():
        theirs = found.get(user, {})
        out: list[Event] = []
        for e in sorted(evs, key=lambda e: (e.occurred_at, e.event_id)):
            if event_text(e) is None:
                out.append(e)
            elif (f := theirs.get(e.event_id)) is not None:
                name = f"t{len(texts)}"
                texts[name] = f
                out.append(dataclasses.replace(e, event_id=name))
        streams[user] = tuple(out)
    return streams, texts


__all__ = ["CatalogRankerSources", "RankerOutcome", "RankerPolicy", "RankerSources",
           "RankerTrainer", "training_streams"]
