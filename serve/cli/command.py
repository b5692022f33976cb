"""What a command module of the ``portrait`` command provides, and what its commands share.

Each module of :mod:`serve.cli` has a ``register(sub)`` that adds its subparsers and sets
each one's ``handler``: a function of the parsed arguments and the process's settings
(read once, in :func:`serve.cli.main`) that returns the exit status.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeAlias

from serve.settings import Settings

Handler: TypeAlias = Callable[[argparse.Namespace, Settings], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def format_time(ts: float | None) -> str:
    """A stored timestamp as the commands print it (UTC, to the minute; ``-`` for none)."""
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


__all__ = ["Handler", "Subcommands", "format_time"]
