"""Everything an offline command needs before it ranks: data, item vectors, splits, phases.

:func:`prepare` loads the dataset, encodes item texts and text events (cached), and splits
the events into a validation and a test phase. :meth:`Prepared.phase` then builds, once per
phase and collaborative settings, what a phase's systems share: the training incidence, the
collaborative vectors learnt from the phase's training events only, and the Portrait factory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from offline.vector_cache import EncoderProvider, cached_encode, text_event_features
from portrait.catalog import ItemRecord, item_text
from portrait.collaborative import interactions, sppmi_embedding
from portrait.errors import InvalidField
from portrait.evaluation.splits import Split, leave_last_out, temporal_split
from portrait.evaluation.tuning import PortraitFactory
from portrait.events import Event, ItemEvent
from portrait.item_space import CollabSettings
from portrait.ports import Encoder, TextFeatures
from storage.datasets import Dataset, load_dataset
from storage.datasets.amazon import review_item

SPLITS = ("leave-last-out", "temporal")


def phase_items(dataset: Dataset, train_events: Sequence[Event]) -> tuple[list[ItemRecord], int]:
    """The catalog one phase ranks, and how many descriptions were rebuilt for it.

    The Amazon loader describes items that lack metadata by their reviews' headlines, as the
    service's catalog import does with the reviews it is given. Built from all reviews, those
    descriptions would show the evaluation held-out text, so here they are rebuilt from the
    reviews among ``train_events`` (stream order) alone, by the loader's own rule
    (:func:`~storage.datasets.amazon.review_description`); an item without a training review
    keeps its title only. Other datasets' items are returned as they are.
    """
    summaries = dataset.review_summaries
    if not summaries:
        return list(dataset.items), 0
    from_reviews = {
        e.item_id for e in dataset.events if isinstance(e, ItemEvent) and e.event_id in summaries
    }
    seen: dict[str, list[str]] = {}
    for ev in train_events:
        summary = summaries.get(ev.event_id)
        if summary is not None and isinstance(ev, ItemEvent):
            seen.setdefault(ev.item_id, []).append(summary)
    out, rebuilt = [], 0
    for item in dataset.items:
        if item.item_id in from_reviews:
            out.append(review_item(item.item_id, seen.get(item.item_id, ())))
            rebuilt += 1
        else:
            out.append(item)
    return out, rebuilt


@dataclass
class Phase:
    """What the systems of one phase (validation or test) share.

    Attributes:
        split: the phase's split.
        incidence: users x items 0/1 matrix of the split's training events.
        collab: collaborative vectors learnt from it, or ``None`` (text vectors only).
        factory: builds Portrait systems over the phase's item vectors.
        seconds: how long building the phase took.
    """

    split: Split
    incidence: np.ndarray
    collab: np.ndarray | None
    factory: PortraitFactory
    seconds: float


@dataclass
class Prepared:
    """A loaded, encoded and split dataset, and the phases built from it so far."""

    dataset: Dataset
    name: str
    items: list[ItemRecord]  # the test phase's catalog (see phase_items)
    item_ids: list[str]
    text_matrices: dict[str, np.ndarray]  # per phase: the item text vectors of its catalog
    texts: dict[str, TextFeatures]
    provider: EncoderProvider
    encode_info: dict[str, Any]
    text_info: dict[str, Any]
    split_kind: str
    splits: dict[str, Split]
    rebuilt_descriptions: int
    timings: dict[str, float]
    phases: dict[tuple[str, CollabSettings | None], Phase] = field(default_factory=dict)

    def phase(self, name: str, collab: CollabSettings | None) -> Phase:
        """The phase ``name`` (``"validation"`` or ``"test"``) with ``collab`` vectors, cached."""
        key = (name, collab)
        if key not in self.phases:
            t0 = time.perf_counter()
            split = self.splits[name]
            inc = interactions(split.train_events, self.item_ids).matrix
            emb = sppmi_embedding(inc, collab) if collab is not None else None
            factory = PortraitFactory(
                self.item_ids,
                self.text_matrices[name],
                emb,
                [i.tags for i in self.items],
                self.texts,
                self.provider.model_id,
            )
            seconds = time.perf_counter() - t0
            self.timings[f"collaborative vectors ({name})"] = (
                self.timings.get(f"collaborative vectors ({name})", 0.0) + seconds
            )
            self.phases[key] = Phase(split, inc, emb, factory, seconds)
        return self.phases[key]

    def dataset_stats(self) -> dict[str, Any]:
        """The dataset's sizes for the report (items: the test phase's catalog)."""
        stats = self.dataset.stats()
        return {
            "name": self.name,
            "users": stats["users"],
            "items": len(self.items),
            "events": stats["events"],
            "rebuilt_descriptions": self.rebuilt_descriptions,
            "stats": stats,
        }


def prepare(
    dataset_name: str,
    data_dir: Path | None,
    *,
    split_kind: str = "leave-last-out",
    encoder: Encoder | None = None,
    cache_dir: Path | None = None,
    dataset: Dataset | None = None,
    datasets_dir: Path | None = None,
    encoder_settings: Any = None,
) -> Prepared:
    """Load, encode (cached) and split a dataset.

    Args:
        dataset_name: a name of :func:`storage.datasets.load_dataset`.
        data_dir: its folder, or ``None`` for the default location.
        split_kind: one of :data:`SPLITS`.
        encoder: an encoder instead of vLLM (tests).
        cache_dir: the vector cache folder; ``None`` for no cache.
        dataset: an already loaded dataset, used instead of ``dataset_name``/``data_dir``.
        datasets_dir: where the non-bundled data sets live (``PORTRAIT_DATASETS_DIR``).
        encoder_settings: how to build the vLLM encoder when ``encoder`` is None.

    Raises:
        DatasetUnavailable: an unknown dataset name, or no folder where one is needed.
        InvalidField: an unknown ``split_kind``.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ds = dataset if dataset is not None else load_dataset(dataset_name, data_dir, datasets_dir)
    timings["load dataset"] = time.perf_counter() - t0
    provider = EncoderProvider(encoder, encoder_settings)
    t0 = time.perf_counter()
    texts, text_info = text_event_features(ds.events, provider, cache_dir, f"{ds.name}-text-events")
    timings["text event features"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if split_kind == "leave-last-out":
        val, test = leave_last_out(ds.events)
    elif split_kind == "temporal":
        val, test = temporal_split(ds.events)
    else:
        raise InvalidField("split", f"unknown split {split_kind!r}; use one of {', '.join(SPLITS)}")
    timings["split"] = time.perf_counter() - t0
    splits = {"validation": val, "test": test}
    t0 = time.perf_counter()
    catalogs = {name: phase_items(ds, split.train_events) for name, split in splits.items()}
    matrices: dict[str, np.ndarray] = {}
    for name, (items, rebuilt) in catalogs.items():
        # One catalog for both phases unless descriptions were rebuilt per phase.
        stem = f"{ds.name}-{name}" if rebuilt else ds.name
        if rebuilt or not matrices:
            matrix, encode_info = cached_encode(
                provider.prompts.passages([item_text(i) for i in items]), provider, cache_dir,
                stem,
                label=f"item texts ({name})" if rebuilt else "item texts",
            )
        matrices[name] = matrix
    timings["item text vectors"] = time.perf_counter() - t0
    items, rebuilt = catalogs["test"]
    return Prepared(
        dataset=ds,
        name=ds.name,
        items=items,
        item_ids=[i.item_id for i in items],
        text_matrices=matrices,
        texts=texts,
        provider=provider,
        encode_info=encode_info,
        text_info=text_info,
        split_kind=split_kind,
        splits=splits,
        rebuilt_descriptions=rebuilt,
        timings=timings,
    )
