"""The database the commands work on, and the commands that manage it: ``portrait migrate``
and ``portrait master-key new|status|rotate``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import Iterator

from serve.cli.command import Subcommands
from serve.settings import Settings


@contextlib.contextmanager
def database(settings: Settings) -> Iterator[str]:
    """The configured database URL (with the password from ``PORTRAIT_DATABASE_PASSWORD``
    when the URL has none, as the service's processes take it), or an embedded Postgres
    started for the duration."""
    if settings.storage.database_url:
        from storage.stores import StoreFactory, password_of

        url = settings.storage.database_url
        yield url if password_of(url) is not None else StoreFactory(url).connect_url()
        return
    from storage.embedded import EmbeddedPostgres

    settings.storage.data_dir.mkdir(parents=True, exist_ok=True)
    pg = EmbeddedPostgres(settings.storage.data_dir / "postgres")
    started = time.perf_counter()
    url = pg.start()
    print(f"embedded Postgres ready in {time.perf_counter() - started:.1f}s "
          f"(data in {settings.storage.data_dir / 'postgres'})", flush=True)
    try:
        yield url
    finally:
        pg.stop()


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the Alembic migrations."""
    from storage.migrate import upgrade

    with database(settings) as url:
        upgrade(url)
        print("migrations applied")
    return 0


def cmd_master_key(args: argparse.Namespace, settings: Settings) -> int:
    """``portrait master-key new|status|rotate``: the master key that wraps users' data keys."""
    from storage.encryption import load_master_keys, new_master_key_text
    from storage.migrate import upgrade
    from storage.user_key_admin import UserKeyAdmin

    if args.action == "new":
        print(new_master_key_text())
        return 0
    master = load_master_keys(settings.security.master_key_file
                              or settings.storage.data_dir / "master.key")
    with database(settings) as url:
        upgrade(url)

        async def run() -> dict[str, int]:
            async with UserKeyAdmin.connect(url) as admin:
                if args.action == "rotate":
                    done = await admin.rewrap(master)
                    print(f"{done} user keys re-wrapped under master key {master.active_id}; "
                          "the old key can be removed from PORTRAIT_MASTER_KEY once every "
                          "process runs with the new one first")
                return await admin.count_by_master_key()

        counts = asyncio.run(run())
        print(f"configured master keys: {', '.join(master.ids)} (active {master.active_id})")
        for master_id, count in counts.items():
            known = "" if master_id in master.ids else "  NOT CONFIGURED"
            print(f"  {master_id}: {count} user keys{known}")
    return 0


def register(sub: Subcommands) -> None:
    """``migrate`` and ``master-key``."""
    sub.add_parser("migrate", help="apply database migrations").set_defaults(handler=cmd_migrate)
    mk = sub.add_parser("master-key", help="the encryption master key: new, status, rotate")
    mk.add_argument("action", choices=("new", "status", "rotate"),
                    help="new: print a fresh key; status: which keys wrap the user keys; "
                         "rotate: re-wrap every user key under the first configured key")
    mk.set_defaults(handler=cmd_master_key)


__all__ = ["cmd_master_key", "cmd_migrate", "database", "register"]
