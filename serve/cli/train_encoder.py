"""``portrait train-encoder``: fine-tune the text encoder on the event log and register it.

The training set is built from the log as it is now (an erased user's events are gone from
it, so their words never train anything) and the catalog's item texts; the base is the
configured encoder (``PORTRAIT_ENCODER_*``), never an earlier fine-tuned version, so versions
do not drift from one another. The folder is written under ``<data dir>/models/encoders/``
and registered; ``portrait encoder switch NAME`` then moves the service to it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from serve.cli.command import Subcommands
from serve.cli.database import database
from serve.settings import Settings

READ_PAGE = 5000


async def log_events(events: Any, progress: Any = None) -> list[Any]:
    """Every event of the log (erased users' are not there), in commit order."""
    out: list[Any] = []
    after = 0
    while page := await events.read_all(after_position=after, limit=READ_PAGE):
        out.extend(rec.event for rec in page)
        after = page[-1].position
        if progress is not None:
            progress(len(out))
    return out


async def register_folder(settings: Settings, url: str, folder: Path) -> Any:
    """Verify ``folder`` against its record and register it as a new encoder version.

    Raises:
        CheckpointMismatch: the folder is not what its record says.
        InvalidField: its name or model id is taken.
    """
    from encoding.encoder_checkpoint import read_record, verify_checkpoint
    from encoding.settings import MODELS
    from portrait.encoder_versions import EncoderVersion
    from serve.composition import store_factory

    folder = Path(folder).resolve()
    record = read_record(folder)
    verify_checkpoint(folder, record)
    version = EncoderVersion(
        0, record.name, record.model_id, record.base_model, record.base_name, str(folder),
        record.dim, created_at=record.created_at, record=record.to_dict(),
        prompts=MODELS[record.base_name].prompts,
    )
    stores = await dataclasses.replace(store_factory(settings, url), pool_size=1).open()
    try:
        return await stores.encoder_versions.register(version)
    finally:
        await stores.close()


def default_name(base: str) -> str:
    return f"{base}-ft-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"


def cmd_train_encoder(args: argparse.Namespace, settings: Settings) -> int:
    """Fine-tune, write the folder, register it (unless ``--no-register``)."""
    from tqdm import tqdm

    from encoding.fine_tune import FineTuneSettings, fine_tune
    from portrait.catalog import item_text
    from portrait.encoder_training import ExampleSettings, NotEnoughText, build_training_set
    from portrait.errors import InvalidField
    from portrait.progress import stage_bars
    from serve.composition import store_factory
    from storage.migrate import upgrade

    base = settings.encoder
    name = args.name or default_name(base.model)
    root = Path(args.out_dir) if args.out_dir else settings.storage.data_dir / "models" / "encoders"
    folder = root / name
    if folder.exists():
        print(f"portrait train-encoder: {folder} exists; choose another --name", file=sys.stderr)
        return 2
    try:
        ft = FineTuneSettings(epochs=args.epochs, seed=args.seed, device=args.device)
        examples = ExampleSettings(seed=args.seed)
    except InvalidField as exc:
        print(f"portrait train-encoder: {exc}", file=sys.stderr)
        return 2
    with database(settings) as url:
        upgrade(url)

        async def inputs() -> tuple[list[Any], dict[str, str]]:
            stores = await dataclasses.replace(store_factory(settings, url), pool_size=2).open()
            try:
                with tqdm(unit="event", desc="reading the log", file=sys.stdout) as bar:
                    def advance(n: int) -> None:
                        bar.n = n
                        bar.refresh()

                    events = await log_events(stores.events, advance)
                records = await stores.encoder_versions.item_records()
            finally:
                await stores.close()
            return events, {r.item_id: item_text(r) for r in records}

        events, items = asyncio.run(inputs())
        try:
            data = build_training_set(events, set(items), examples)
        except NotEnoughText as exc:
            print(f"portrait train-encoder: not enough to train on: {exc}", file=sys.stderr)
            return 1
        print(f"{len(data.train)} training and {len(data.validation)} validation examples "
              f"from {data.users} users, {len(items)} items; base {base.model_id}", flush=True)
        progress = stage_bars(
            lambda stage, total: tqdm(total=total, desc=stage, unit="step", file=sys.stdout))
        started = time.perf_counter()
        partial = folder.with_name(folder.name + ".partial")
        if partial.exists():
            import shutil

            shutil.rmtree(partial)
        result = fine_tune(Path(base.resolved_model_path()), base.model, base.model_id, items,
                           data, partial, name, ft, progress, serve_max_length=base.max_length)
        partial.rename(folder)
        v = result.record.validation
        print(f"{name}: validation text-only NDCG@10 {v['base_ndcg10']:.4f} (base) -> "
              f"{v['ndcg10']:.4f} (epoch {v['best_epoch']}) in "
              f"{time.perf_counter() - started:.0f}s; written to {folder}")
        if v["best_epoch"] == 0:
            print("no epoch beat the base encoder on validation: the folder holds the base's "
                  "weights under a new id; switching to it gains nothing", file=sys.stderr)
        if args.no_register:
            return 0
        version = asyncio.run(register_folder(settings, url, folder))
        print(f"registered as version {version.version} ({version.model_id}); switch with: "
              f"portrait encoder switch {version.name}")
    return 0


def register(sub: Subcommands) -> None:
    """``train-encoder``."""
    p = sub.add_parser(
        "train-encoder",
        help="fine-tune the text encoder on the event log (next-item, contrastive) and "
             "register it as a new encoder version")
    p.add_argument("--name", default=None,
                   help="the version's name (default <model>-ft-<UTC time>)")
    p.add_argument("--epochs", type=int, default=8, help="at most this many epochs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out-dir", default=None,
                   help="where the folder goes (default <data dir>/models/encoders)")
    p.add_argument("--no-register", action="store_true",
                   help="only write the folder (register it later with portrait encoder "
                        "register FOLDER)")
    p.set_defaults(handler=cmd_train_encoder)


__all__ = ["cmd_train_encoder", "log_events", "register", "register_folder"]
