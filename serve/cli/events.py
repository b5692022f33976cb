"""``portrait import-events`` (history into the running service) and ``portrait erase-user``
(crypto-shredding through the running service): both talk to the service's API."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from serve.cli.command import Subcommands, format_time
from serve.settings import Settings


def _service_url(args: argparse.Namespace, settings: Settings) -> str:
    return args.url or f"http://{settings.api.host}:{settings.api.port}"


def cmd_import_events(args: argparse.Namespace, settings: Settings) -> int:
    """A file or data set through the running service's API."""
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
        events = load_dataset(args.dataset, args.data_dir, settings.storage.datasets_dir).events
        rows = ((f"event {i + 1}", e) for i, e in enumerate(events))
        total = len(events)
    url = _service_url(args, settings)
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
    """Erase a user through the running service, so that the shard holding the user forgets
    them too (an offline erasure would leave its copy in memory)."""
    from portrait_client import Client
    from portrait_client import PortraitError as ApiError

    with Client(_service_url(args, settings), token=args.token) as client:
        try:
            record = client.erase_user(args.user_id)
        except ApiError as exc:
            hint = " (a token with users:erase: --token or PORTRAIT_TOKEN)" \
                if exc.status in (401, 403) else ""
            print(f"portrait erase-user: {exc}{hint}", file=sys.stderr)
            return 2
    print(f"erased {args.user_id!r}: erasure #{record['erasure_id']} at "
          f"{format_time(record['erased_at'])}; {record['events']} log rows left unreadable, "
          f"{record['snapshots']} snapshots and {record['text_features']} cached text features "
          f"deleted; recorded as user hash {record['user_hash'][:16]}...")
    return 0


def register(sub: Subcommands) -> None:
    """``import-events`` and ``erase-user``."""
    ie = sub.add_parser("import-events", help="load history into the running service")
    ie.add_argument("file", nargs="?", type=Path, default=None,
                    help="an interactions CSV in the generic format (see README)")
    ie.add_argument("--dataset", default=None, help="or a data set: movielens, amazon-...")
    ie.add_argument("--data-dir", type=Path, default=None)
    ie.add_argument("--url", default=None, help="the service (default PORTRAIT_HOST:PORT)")
    ie.add_argument("--token", default=None, help="events:write token (default $PORTRAIT_TOKEN)")
    ie.add_argument("--batch", type=int, default=500)
    ie.add_argument("--show-rejected", type=int, default=20, metavar="N")
    ie.set_defaults(handler=cmd_import_events)
    erase = sub.add_parser("erase-user", help="erase a user (crypto-shredding) in the service")
    erase.add_argument("user_id")
    erase.add_argument("--url", default=None, help="the service (default PORTRAIT_HOST:PORT)")
    erase.add_argument("--token", default=None, help="users:erase token (default $PORTRAIT_TOKEN)")
    erase.set_defaults(handler=cmd_erase_user)


__all__ = ["cmd_erase_user", "cmd_import_events", "register"]
