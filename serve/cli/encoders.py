"""``portrait encoder``: the text encoder's versions (see "Encoder versions" in the README).

    portrait encoder list             every version, the active one marked
    portrait encoder register FOLDER  check a fine-tuned encoder's folder and record it
    portrait encoder switch NAME      re-encode the catalog and cached texts under NAME
                                      (resumable), then make it active in one transaction
    portrait encoder rollback         switch back to the version active before

Like ``portrait train-items``, the commands work on the database: a running service picks a
switch up with its next catalog refresh (PORTRAIT_CATALOG_REFRESH_S): the catalog's vectors
changed, a new view names the new encoder, and the shards re-fold their users' text under it.
Until the switch commits, the service serves the old version, whatever happens to this
command; run it again to resume.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from serve.cli.command import Subcommands, format_time
from serve.cli.database import database
from serve.settings import Settings


class LocalVersionedEncoder:
    """The base engine of the settings and version engines loaded from their folders (after
    their checks), in this process; async over a worker thread."""

    def __init__(self, settings: Settings) -> None:
        from encoding.version_engines import VersionEngines
        from encoding.vllm_encoder import VllmEncoder

        def start(s: Any) -> Any:
            return VllmEncoder(s).start()

        self._engines = VersionEngines(VllmEncoder(settings.encoder), settings.encoder, start)
        self._started = False

    def _base(self) -> Any:
        if not self._started:
            self._engines.base.start()  # type: ignore[attr-defined]
            self._started = True
        return self._engines.base

    @property
    def model_id(self) -> str:
        return self._engines.base.model_id

    @property
    def dim(self) -> int:
        return self._base().dim  # type: ignore[no-any-return]

    @property
    def prompts(self) -> Any:
        from portrait.prompts import prompts_of

        return prompts_of(self._engines.base)

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        base = await asyncio.to_thread(self._base)
        return await asyncio.to_thread(base.encode, texts)

    async def encode_for(self, version: Any, texts: Sequence[str]) -> np.ndarray:
        engine = await asyncio.to_thread(self._engines.engine_for, version)
        return await asyncio.to_thread(engine.encode, texts)


def _run(settings: Settings, work: Callable[[Any, Any], Awaitable[int]]) -> int:
    """``work(stores, encoder)`` on the migrated database."""
    from encoding.encoder_checkpoint import CheckpointMismatch
    from serve.composition import store_factory
    from storage.migrate import upgrade

    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            stores = await dataclasses.replace(store_factory(settings, url), pool_size=2).open()
            try:
                return await work(stores, LocalVersionedEncoder(settings))
            finally:
                await stores.close()

        try:
            return asyncio.run(run())
        except CheckpointMismatch as exc:
            print(f"portrait encoder: refused: {exc}", file=sys.stderr)
            return 2


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async def work(stores: Any, encoder: Any) -> int:
        active = await stores.encoder_versions.active()
        mark = "*" if active.version == 0 else " "
        print(f"{mark} 0  base  {settings.encoder.model_id or settings.encoder.model}  (shipped)")
        for v in await stores.encoder_versions.all_versions():
            mark = "*" if v.version == active.version else " "
            print(f"{mark} {v.version}  {v.name}  {v.model_id}  {v.state}  dim {v.dim}  "
                  f"from {v.base_model}  activated {format_time(v.activated_at)}")
        return 0

    return _run(settings, work)


def cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    from encoding.encoder_checkpoint import CheckpointMismatch, read_record, verify_checkpoint
    from portrait.encoder_versions import EncoderVersion

    folder = Path(args.folder).resolve()
    try:
        record = read_record(folder)
    except CheckpointMismatch as exc:
        print(f"portrait encoder register: refused: {exc}", file=sys.stderr)
        return 2

    async def work(stores: Any, encoder: Any) -> int:
        verify_checkpoint(folder, record)
        version = await stores.encoder_versions.register(EncoderVersion(
            0, record.name, record.model_id, record.base_model, record.base_name,
            str(folder), record.dim, created_at=record.created_at, record=record.to_dict()))
        print(f"encoder {version.name} registered as version {version.version} "
              f"({version.model_id}, {version.dim} dims); `portrait encoder switch "
              f"{version.name}` makes it active")
        return 0

    return _run(settings, work)


async def _switch(stores: Any, encoder: Any, name: str | None) -> int:
    from tqdm import tqdm

    from actors.encoder_switch import EncoderSwitch
    from portrait.progress import on_bar

    switch = EncoderSwitch(stores, encoder, stores.catalog(encoder).base_encoder())
    started = time.perf_counter()
    with tqdm(unit="item", desc="re-encoding", file=sys.stdout) as bar:
        if name is None:
            pointer = await switch.rollback(on_bar(bar))
        else:
            pointer = await switch.switch(await switch.version(name), on_bar(bar))
    s = switch.status
    print(f"encoder version {pointer.version} active (was {pointer.previous}) after "
          f"{time.perf_counter() - started:.1f}s: {s.items_encoded} items and "
          f"{s.texts_encoded} texts encoded ({s.texts_seen} text events); a running "
          "service ranks with it after its next catalog refresh")
    return 0


def cmd_switch(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, lambda stores, encoder: _switch(stores, encoder, args.name))


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    return _run(settings, lambda stores, encoder: _switch(stores, encoder, None))


def register(sub: Subcommands) -> None:
    """``encoder list|register|switch|rollback``."""
    enc = sub.add_parser("encoder", help="text encoder versions: list, register, switch, "
                                         "rollback")
    verbs = enc.add_subparsers(dest="encoder_command", required=True)
    verbs.add_parser("list", help="every encoder version").set_defaults(handler=cmd_list)
    reg = verbs.add_parser("register", help="check and record a fine-tuned encoder's folder")
    reg.add_argument("folder")
    reg.set_defaults(handler=cmd_register)
    sw = verbs.add_parser("switch", help="migrate to a version, then make it active")
    sw.add_argument("name")
    sw.set_defaults(handler=cmd_switch)
    verbs.add_parser("rollback", help="switch back to the previous version"
                     ).set_defaults(handler=cmd_rollback)


__all__ = ["LocalVersionedEncoder", "cmd_list", "cmd_register", "cmd_rollback",
           "cmd_switch", "register"]
