"""Everything an offline command needs before it ranks: data, item vectors, splits, phases.

:func:`prepare` loads the dataset, encodes item texts and text events (cached), and splits
the events into a validation and a test phase. :meth:`Prepared.phase` then builds, once per
phase and collaborative settings, what a phase's systems share: the training incidence, the
collaborative vectors learnt from the phase's training events only, and the Portrait factory.
"""

from __future__ import annotations

import dataclasses
import time
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
from portrait.ports import Encoder, TextFeatures
from portrait.tuned_config import CollabSettings
from storage.datasets import Dataset, load_dataset

SPLITS = ("leave-last-out", "temporal")


def evaluation_items(dataset: Dataset) -> tuple[list[ItemRecord], int]:
    """The catalog for evaluation, and how many item descriptions were blanked.

    The Amazon loader describes items that lack metadata with their *review summaries*; an
    evaluation holding reviews out would see held-out text in the catalog, so those
    descriptions are dropped here (title ``"Item <asin>"`` only).
    """
    if not dataset.counters.get("items_from_reviews"):
        return list(dataset.items), 0
    out, blanked = [], 0
    for item in dataset.items:
        if item.title == f"Item {item.item_id}" and not item.tags and not item.attributes:
            out.append(dataclasses.replace(item, description=""))
            blanked += 1
        else:
            out.append(item)
    return out, blanked


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
    items: list[ItemRecord]
    item_ids: list[str]
    text_matrix: np.ndarray
    texts: dict[str, TextFeatures]
    provider: EncoderProvider
    encode_info: dict[str, Any]
    text_info: dict[str, Any]
    split_kind: str
    splits: dict[str, Split]
    blanked_descriptions: int
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
                self.text_matrix,
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
        """The dataset's sizes for the report (items counted after :func:`evaluation_items`)."""
        stats = self.dataset.stats()
        return {
            "name": self.name,
            "users": stats["users"],
            "items": len(self.items),
            "events": stats["events"],
            "blanked_descriptions": self.blanked_descriptions,
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
    items, blanked = evaluation_items(ds)
    provider = EncoderProvider(encoder, encoder_settings)
    t0 = time.perf_counter()
    text_matrix, encode_info = cached_encode(
        [item_text(i) for i in items], provider, cache_dir, ds.name, label="item texts"
    )
    timings["item text vectors"] = time.perf_counter() - t0
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
    return Prepared(
        dataset=ds,
        name=ds.name,
        items=items,
        item_ids=[i.item_id for i in items],
        text_matrix=text_matrix,
        texts=texts,
        provider=provider,
        encode_info=encode_info,
        text_info=text_info,
        split_kind=split_kind,
        splits={"validation": val, "test": test},
        blanked_descriptions=blanked,
        timings=timings,
    )
