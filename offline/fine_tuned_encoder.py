"""The evaluation's fine-tuned encoders: trained on the test phase's training events, then run
end to end (vLLM encodes the catalog and the text events with the new weights).

``portrait evaluate --fine-tune-encoder SEEDS`` fine-tunes one encoder per seed on the events
the test phase's systems train on (never a test target), caches the folder under the vector
cache (``encoders/<dataset>-<digest>-s<seed>``: the same data, settings and seed reuse it),
encodes the phase's catalog and every text event through vLLM loading that folder, and adds,
per seed, the text-only blend and the two-stage system over those vectors, with the tuned
blend's parameters (nothing re-tuned, as for every ablation). The report pairs each with the
same system over the base encoder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encoding.encoder_checkpoint import (
    CheckpointMismatch,
    EncoderRecord,
    read_record,
    verify_checkpoint,
)
from encoding.encoder_checkpoint import settings_for as checkpoint_settings
from encoding.fine_tune import FineTuneSettings, fine_tune
from offline.prepare import Phase, Prepared
from offline.progress import progress_bar
from offline.vector_cache import EncoderProvider, cached_encode, text_event_features
from portrait.catalog import item_text
from portrait.encoder_training import ExampleSettings, NotEnoughText, build_training_set
from portrait.evaluation.runner import System
from portrait.evaluation.tuning import PortraitFactory, PortraitParams
from portrait.evaluation.two_stage_system import TwoStageSystem
from portrait.learned_ranker import NotEnoughTraining, RankerSettings
from portrait.progress import stage_bars

TEXT_ONLY = "blend-text-only"


def ft_name(system: str, seed: int) -> str:
    return f"{system}-ft{seed}"


@dataclass
class FineTuned:
    """One seed's encoder and the systems over its vectors."""

    seed: int
    folder: Path
    record: dict[str, Any]
    systems: list[System] = field(default_factory=list)
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # label -> (ft, base)
    seconds: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def _train_digest(prep: Prepared, phase: Phase, s: FineTuneSettings, e: ExampleSettings,
                  base_model_id: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([dataclasses.asdict(s), dataclasses.asdict(e), base_model_id],
                        sort_keys=True, default=str).encode())
    for ev in phase.split.train_events:
        h.update(f"{ev.event_id}\0".encode())
    for item in prep.items:
        h.update(item_text(item).encode() + b"\x1e")
    return h.hexdigest()[:12]


def _cached(folder: Path) -> EncoderRecord | None:
    """The record of a complete folder a previous run left, or None (absent, or not what its
    record says: trained again)."""
    try:
        record = read_record(folder)
        verify_checkpoint(folder, record)
    except CheckpointMismatch:
        return None
    return record


def fine_tuned_encoder(
    prep: Prepared, phase: Phase, seed: int, cache_dir: Path | None,
    settings: FineTuneSettings | None = None, examples: ExampleSettings | None = None,
    log: Callable[[str], None] = print,
) -> tuple[Path, EncoderRecord, float]:
    """The folder of the encoder fine-tuned on ``phase``'s training events with ``seed``
    (trained, or found in the cache), its record, and the training seconds (0 when cached)."""
    base = prep.provider.settings
    if base is None:
        raise ValueError("fine-tuning needs the vLLM encoder's settings, not a test encoder")
    s = dataclasses.replace(settings or FineTuneSettings(), seed=seed)
    e = dataclasses.replace(examples or ExampleSettings(), seed=seed)
    root = Path(cache_dir or ".portrait/cache") / "encoders"
    folder = root / f"{prep.name}-{_train_digest(prep, phase, s, e, base.model_id)}-s{seed}"
    cached = _cached(folder)
    if cached is not None:
        log(f"fine-tuned encoder (seed {seed}): cached at {folder}")
        return folder, cached, 0.0
    data = build_training_set(phase.split.train_events, set(prep.item_ids), e)
    texts = {i.item_id: item_text(i) for i in prep.items}
    log(f"fine-tuning the encoder (seed {seed}): {len(data.train)} training and "
        f"{len(data.validation)} validation examples")
    tmp = folder.with_name(folder.name + ".partial")
    if tmp.exists():  # a run killed while training
        shutil.rmtree(tmp)
    progress = stage_bars(
        lambda stage, total: progress_bar(total, f"encoder seed {seed}: {stage}", "step"))

    t0 = time.perf_counter()
    result = fine_tune(
        Path(base.resolved_model_path()), base.model, base.model_id, texts, data, tmp,
        name=f"{prep.name}-s{seed}", settings=s, progress=progress,
        serve_max_length=base.max_length,
    )
    seconds = time.perf_counter() - t0
    tmp.rename(folder)
    v = result.record.validation
    log(f"fine-tuned encoder (seed {seed}): validation NDCG@10 {v['base_ndcg10']:.4f} -> "
        f"{v['ndcg10']:.4f} (epoch {v['best_epoch']}), {seconds:.0f}s")
    return folder, read_record(folder), seconds


def fine_tuned_systems(
    prep: Prepared, phase: Phase, params: PortraitParams, seeds: Sequence[int],
    cache_dir: Path | None, log: Callable[[str], None] = print,
    ranker: RankerSettings | None = None,
) -> list[FineTuned]:
    """Per seed: the encoder, the test phase's vectors through vLLM, the text-only blend and
    the two-stage system over them."""
    out = []
    for seed in seeds:
        try:
            folder, record, train_s = fine_tuned_encoder(prep, phase, seed, cache_dir, log=log)
        except NotEnoughText as exc:
            # as the service refuses it: the report says why there is no fine-tuned row
            log(f"fine-tuned encoder (seed {seed}) not trained: {exc}")
            out.append(FineTuned(seed, Path(), {}, refused={"encoder": str(exc)}))
            continue
        ft = FineTuned(seed, folder, record.to_dict(), seconds={"training": train_s})
        settings = checkpoint_settings(folder, record, prep.provider.settings)
        provider = EncoderProvider(settings=settings)
        t0 = time.perf_counter()
        matrix, _ = cached_encode(
            provider.prompts.passages([item_text(i) for i in prep.items]), provider, cache_dir,
            f"{prep.name}-test", label=f"item texts (fine-tuned, seed {seed})")
        texts, _ = text_event_features(prep.dataset.events, provider, cache_dir,
                                       f"{prep.name}-text-events")
        ft.seconds["encoding"] = time.perf_counter() - t0
        factory = PortraitFactory(prep.item_ids, matrix, phase.collab,
                                  [i.tags for i in prep.items], texts, provider.model_id)
        blend = factory.system(ft_name("portrait-blend", seed), params, state_cache={})
        ft.systems.append(blend)
        ft.pairs[f"blend, fine-tuned encoder (seed {seed}) vs base"] = (
            blend.name, "portrait-blend")
        if phase.collab is not None:
            text_only = factory.system(ft_name(TEXT_ONLY, seed),
                                       dataclasses.replace(params, alpha=0.0))
            ft.systems.append(text_only)
            ft.pairs[f"text-only, fine-tuned encoder (seed {seed}) vs base"] = (
                text_only.name, TEXT_ONLY)
        t0 = time.perf_counter()
        try:
            two_stage = TwoStageSystem.trained(ft_name("portrait", seed), blend, phase.split,
                                               ranker or RankerSettings())
            ft.systems.append(two_stage)
            ft.pairs[f"two-stage, fine-tuned encoder (seed {seed}) vs base"] = (
                two_stage.name, "portrait")
        except NotEnoughTraining as exc:
            ft.refused[ft_name("portrait", seed)] = str(exc)
        ft.seconds["ranker"] = time.perf_counter() - t0
        out.append(ft)
    return out


def parse_seeds(spec: str) -> list[int]:
    """``"0,1"`` -> ``[0, 1]``."""
    try:
        seeds = [int(s) for s in spec.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--fine-tune-encoder: {spec!r} is not a comma-separated list of "
                         "integer seeds") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--fine-tune-encoder: {spec!r}: give distinct seeds >= 0, e.g. 0,1")
    return seeds


__all__ = ["FineTuned", "fine_tuned_encoder", "fine_tuned_systems", "ft_name", "parse_seeds"]
