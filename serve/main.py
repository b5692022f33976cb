"""The ``portrait`` command.

    portrait run              the service on the embedded defaults (Postgres, vLLM on CPU,
                              the bundled MovieLens catalog); Ctrl-C stops everything
    portrait import-catalog   encode and store a dataset's catalog, with a progress bar
    portrait migrate          apply the Alembic migrations to PORTRAIT_DATABASE_URL
    portrait evaluate|tune|ab offline evaluation (see README)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

from serve.settings import Settings, SettingsError

_log = logging.getLogger("portrait")


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL, or an embedded Postgres started for the duration."""
    if settings.database_url:
        yield settings.database_url
        return
    from storage.embedded import EmbeddedPostgres

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(settings.data_dir / "postgres")
    started = time.perf_counter()
    url = pg.start()
    print(f"embedded Postgres ready in {time.perf_counter() - started:.1f}s "
          f"(data in {settings.data_dir / 'postgres'})", flush=True)
    try:
        yield url
    finally:
        pg.stop()


def load_dataset(name: str, data_dir: Path | None) -> Any:
    """A dataset by name: ``movielens`` (bundled), ``amazon-magazine``, ``generic``."""
    from storage.datasets.amazon import load_amazon
    from storage.datasets.generic import load_generic
    from storage.datasets.movielens import load_movielens
    from storage.datasets.paths import shared_datasets_dir

    if name == "movielens":
        return load_movielens(data_dir)
    if name == "amazon-magazine":
        base = data_dir or (shared_datasets_dir() or Path(".")) / "amazon-reviews-2018-small"
        return load_amazon(base / "Magazine_Subscriptions_5.json.gz",
                           base / "meta_Magazine_Subscriptions.json.gz")
    if name == "generic":
        if data_dir is None:
            raise SettingsError("--data-dir is required for the generic format")
        return load_generic(data_dir / "interactions.csv", data_dir / "items.csv")
    raise SettingsError(f"unknown dataset {name!r}: use movielens, amazon-magazine or generic")


async def import_catalog(url: str, encoder: Any, records: Sequence[Any]) -> Any:
    """Upsert ``records`` through ``encoder`` with a progress bar; returns the UpsertResult."""
    from tqdm import tqdm

    from storage.catalog import ItemCatalog
    from storage.database import create_engine

    engine = create_engine(url)
    try:
        catalog = ItemCatalog(engine, encoder)
        with tqdm(total=len(records), unit="item", desc="catalog", file=sys.stdout) as bar:
            result = await catalog.upsert(records, progress=bar.update)
        stale = await catalog.stale_count()
        if stale:
            with tqdm(total=stale, unit="item", desc="re-encode (model changed)", file=sys.stdout) as bar:
                await catalog.reencode(progress=bar.update)
        return result
    finally:
        await engine.dispose()


def cmd_import_catalog(args: argparse.Namespace, settings: Settings) -> int:
    from actors.text_features import ThreadedEncoder
    from serve.vllm_encoder import VllmEncoder
    from storage.migrate import upgrade

    dataset = load_dataset(args.dataset, args.data_dir)
    with database(settings) as url:
        upgrade(url)
        t0 = time.perf_counter()
        encoder = VllmEncoder(settings.encoder).start()
        print(f"encoder {encoder.model_id} loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        t1 = time.perf_counter()
        result = asyncio.run(import_catalog(url, ThreadedEncoder(encoder), dataset.items))
        took = time.perf_counter() - t1
        print(f"{len(dataset.items)} items in {took:.1f}s: {result.inserted} new, "
              f"{result.updated} changed, {result.unchanged} unchanged, {result.encoded} encoded")
    return 0


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrate import upgrade

    with database(settings) as url:
        upgrade(url)
        print("migrations applied")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from serve.service import run_service

    with database(settings) as url:
        return run_service(settings, url, load_demo_catalog=not args.no_catalog)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("PORTRAIT_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the service (embedded defaults)")
    run.add_argument("--no-catalog", action="store_true", help="do not import the bundled catalog")
    imp = sub.add_parser("import-catalog", help="encode and store a dataset's items")
    imp.add_argument("--dataset", default="movielens")
    imp.add_argument("--data-dir", type=Path, default=None)
    sub.add_parser("migrate", help="apply database migrations")
    for name in ("evaluate", "tune", "ab"):
        sub.add_parser(name, help=f"offline {name} (see `portrait {name} --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.command in ("evaluate", "tune", "ab"):
        from serve.cli import evaluate as evaluation

        return int(evaluation.main([args.command, *rest]) or 0)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        settings = Settings.from_env()
        handler = {"run": cmd_run, "import-catalog": cmd_import_catalog, "migrate": cmd_migrate}
        return handler[args.command](args, settings)
    except SettingsError as exc:
        print(f"portrait: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
