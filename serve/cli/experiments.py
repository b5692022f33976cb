"""``portrait experiment report NAME``: an online experiment's per-variant report."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from serve.cli.command import Subcommands
from serve.cli.database import database
from serve.settings import Settings


def cmd_experiment(args: argparse.Namespace, settings: Settings) -> int:
    """The online experiment's report, rebuilt from the impressions and the event log in the
    configured database."""
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
                    stores, args.name, size, window_s=settings.experiments.attribution_window_s,
                    experiment=settings.experiments.variant_policy().experiment)
            finally:
                await stores.close()
            print(json.dumps(report, indent=2) if args.json else format_report(report))
            return 0

        return asyncio.run(run())


def register(sub: Subcommands) -> None:
    """``experiment report``."""
    ex = sub.add_parser("experiment", help="online experiments: the per-variant report")
    ex.set_defaults(handler=cmd_experiment)
    actions = ex.add_subparsers(dest="action", required=True)
    report = actions.add_parser("report", help="per variant CTR, conversion, MRR, "
                                "coverage with intervals; interleaving preference")
    report.add_argument("name", help="the experiment's name")
    report.add_argument("--json", action="store_true", help="the report as JSON")


__all__ = ["cmd_experiment", "register"]
