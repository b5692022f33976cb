"""``portrait token create|list|revoke``: the API tokens in the configured database."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from serve.cli.command import Subcommands, format_time
from serve.cli.database import database
from serve.settings import Settings


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Create, list or revoke API tokens."""
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
                        state = ("revoked " + format_time(r.revoked_at)) if r.revoked_at \
                            else "valid"
                        print(f"{r.name:<32} {r.token_id}  created {format_time(r.created_at)}  "
                              f"{state:<28} {' '.join(sorted(r.scopes))}")
                else:
                    record = await stores.tokens.revoke(args.name, time.time())
                    if record is None:
                        print(f"portrait token revoke: no token called {args.name!r}",
                              file=sys.stderr)
                        return 2
                    print(f"revoked {record.name!r} (running services stop accepting it within "
                          f"PORTRAIT_TOKEN_CACHE_S = {settings.security.token_cache_s:g} s)")
                return 0
            finally:
                await stores.close()

        return asyncio.run(run())


def register(sub: Subcommands) -> None:
    """``token create|list|revoke``."""
    from portrait.access import SCOPES

    token = sub.add_parser("token", help="create, list and revoke API tokens")
    token.set_defaults(handler=cmd_token)
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="a new token, printed once")
    create.add_argument("--name", required=True, help="who or what uses it (unique)")
    create.add_argument("--scope", action="append", choices=SCOPES, required=True,
                        help="repeat for several; admin grants every scope")
    actions.add_parser("list", help="every token: name, id, dates, scopes (never secrets)")
    revoke = actions.add_parser("revoke", help="revoke a token by name or id")
    revoke.add_argument("name")


__all__ = ["cmd_token", "register"]
