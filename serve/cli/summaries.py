"""``portrait summaries prepare``: the profile summaries' model checkpoint."""

from __future__ import annotations

import argparse
import sys
import time

from serve.cli.command import Subcommands
from serve.settings import Settings


def cmd_summaries(args: argparse.Namespace, settings: Settings) -> int:
    """Convert the summary model's GGUF into the checkpoint vLLM loads (once; also done on
    first use)."""
    from serve.summarizer import checkpoint_dir, ensure_checkpoint

    started = time.perf_counter()
    existed = (checkpoint_dir(settings.storage.data_dir) / "portrait-build.json").is_file()
    try:
        path = ensure_checkpoint(settings.storage.data_dir)
    except RuntimeError as exc:  # SummarizerUnavailable: the wheel is not installed
        print(f"portrait: {exc}", file=sys.stderr)
        return 2
    state = "already there" if existed else f"built in {time.perf_counter() - started:.0f} s"
    print(f"{path} ({state})")
    return 0


def register(sub: Subcommands) -> None:
    """``summaries prepare``."""
    sm = sub.add_parser("summaries", help="the profile summaries' model")
    sm.add_argument("action", choices=("prepare",),
                    help="prepare: convert its GGUF into a checkpoint under the data dir")
    sm.set_defaults(handler=cmd_summaries)


__all__ = ["cmd_summaries", "register"]
