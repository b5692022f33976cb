"""The ``portrait`` command.

    portrait run              the service on the embedded defaults (Postgres, vLLM on CPU,
                              the bundled MovieLens catalog); Ctrl-C stops everything
    portrait cluster          up|down|status|kill-worker K: a multi-node Ray on this machine
    portrait import-catalog   encode and store a dataset's catalog, with a progress bar
    portrait train-items      train the collaborative item space from the event log
    portrait encoder          list|register FOLDER|switch NAME|rollback: text encoder versions
    portrait train-encoder    fine-tune the text encoder on the event log, register it
    portrait migrate          apply the Alembic migrations to PORTRAIT_DATABASE_URL
    portrait master-key       new|status|rotate: the master key that wraps users' data keys
    portrait token            create, list and revoke API tokens
    portrait import-events    load history (CSV or a data set) into the running service
    portrait erase-user       erase a user (crypto-shredding) through the running service
    portrait experiment       report NAME: an online experiment's per-variant report
    portrait summaries        prepare: build the summary model's checkpoint (once)
    portrait evaluate|tune|ab offline evaluation (see README)
"""

# One module per command family; each registers its subparsers with their handlers. This
# module reads the settings (once, for every command) and dispatches; it is the one module
# above both applications: the offline commands go to offline.cli.

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from portrait.errors import PortraitError
from serve.cli import (
    catalog,
    database,
    encoders,
    events,
    experiments,
    run,
    summaries,
    tokens,
    train_encoder,
)
from serve.cli.command import Handler
from serve.settings import Settings, SettingsError

OFFLINE_COMMANDS = ("evaluate", "tune", "ab")
_FAMILIES = (run, catalog, encoders, database, tokens, events, experiments, summaries,
             train_encoder)


def build_parser() -> argparse.ArgumentParser:
    """The ``portrait`` argument parser with every command registered."""
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for family in _FAMILIES:
        family.register(sub)
    for name in OFFLINE_COMMANDS:
        # No help of its own: `portrait evaluate --help` reaches offline.cli's parser.
        sub.add_parser(name, help=f"offline {name} (see `portrait {name} --help`)", add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command in ``argv`` (default: the process's arguments); the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"portrait: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.logging.level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command in OFFLINE_COMMANDS:
        from offline.cli import main as offline_main

        return int(offline_main([args.command, *rest]) or 0)
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except (SettingsError, PortraitError) as exc:
        print(f"portrait: {exc}", file=sys.stderr)
        return 2


__all__ = ["OFFLINE_COMMANDS", "build_parser", "main"]
