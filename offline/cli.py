"""``portrait evaluate | tune | ab``: offline evaluation of Portrait against baselines.

    portrait evaluate --dataset movielens --out out/eval-2026-11-28
    portrait evaluate --dataset amazon-magazine --config configs/tuned-movielens.json
    portrait tune --dataset movielens --out configs/tuned-movielens.json
    portrait ab --a configs/x.json --b configs/y.json --dataset movielens

``evaluate`` loads the data, encodes item texts with the real encoder (vLLM; vectors cached
under ``.portrait/cache/``), splits (leave-last-out by default), learns collaborative vectors
from each phase's training events, picks Portrait's configuration on the VALIDATION split
(``--config`` to use a tuned file instead) and the baselines' parameters on the same
validation split, then runs every system once on the TEST split, full-catalog ranking, and
writes ``report.md``, ``metrics.json`` and PNG plots into ``--out``.

``tune`` searches on validation only and writes the versioned config document the service
loads. ``ab`` replays the test split through two config files and reports paired differences.
The evaluation logic itself is the pure package :mod:`portrait.evaluation`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from offline.commands import cmd_ab, cmd_evaluate, cmd_tune
from offline.documents import InvalidConfigFile
from offline.prepare import SPLITS
from portrait.evaluation.metrics import DEFAULT_RESAMPLES
from portrait.item_space import CollabSettings
from portrait.ports import Encoder
from storage.datasets import DATASET_NAMES, Dataset, DatasetUnavailable
from storage.datasets.paths import repo_root

COMMANDS: dict[str, Callable[..., int]] = {"evaluate": cmd_evaluate, "tune": cmd_tune, "ab": cmd_ab}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASET_NAMES, default="movielens")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="dataset folder (default: bundled MovieLens / shared Amazon folder)")
    p.add_argument("--split", choices=SPLITS, default="leave-last-out")
    p.add_argument("--cache-dir", type=Path, default=repo_root() / ".portrait" / "cache",
                   help="encoder output cache (default: .portrait/cache)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples")


def _collab_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collab-dim", type=int, default=CollabSettings().dim,
                   help="collaborative vector size (0: text vectors only)")
    p.add_argument("--collab-shift", type=float, default=1.0, help="SPPMI shift k")
    p.add_argument("--collab-min-count", type=int, default=2,
                   help="training users an item needs to get a collaborative vector")


def build_parser() -> argparse.ArgumentParser:
    """The parser of the three commands and their flags."""
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("evaluate", help="evaluate Portrait and baselines, write a report")
    _common(ev)
    _collab_args(ev)
    ev.add_argument("--out", type=Path, default=None,
                    help="output folder (default out/eval-<date>)")
    ev.add_argument("--config", type=Path, default=None,
                    help="tuned config document; default: tune on validation first")
    ev.add_argument("--trials", type=int, default=40, help="tuning budget when no --config")
    ev.add_argument("--served", default=None, metavar="URL",
                    help="evaluate what a running service at URL serves, next to the offline "
                         "figure of its config (--config, default: the shipped default)")
    ev.add_argument("--token", default=os.environ.get("PORTRAIT_TOKEN"), metavar="TOKEN",
                    help="API token for --served (scopes events:write, recommendations:read; "
                         "default $PORTRAIT_TOKEN)")
    ev.add_argument("--served-prefix", default="", metavar="P",
                    help="prefix for user and event ids, so one service can take several runs")
    ev.add_argument("--encoder", type=Path, default=None, metavar="FOLDER",
                    help="evaluate with this encoder version (a folder `portrait train-encoder` "
                         "wrote) instead of the base model, end to end through vLLM")
    ev.add_argument("--fine-tune-encoder", default=None, metavar="SEEDS",
                    help="also fine-tune the encoder on the test phase's training events, once "
                         "per seed (e.g. 0,1), and add the text-only, blend and two-stage "
                         "systems over its vectors, paired with the base encoder's")
    ev.add_argument("--ann", action="store_true",
                    help="rank the test phase through the approximate nearest-neighbour index "
                         "at any catalog size (the service's path for large catalogs), "
                         "instead of scoring every item")
    ev.add_argument("--no-plots", action="store_true")
    tu = sub.add_parser("tune", help="tune Portrait on the validation split, write a config file")
    _common(tu)
    _collab_args(tu)
    tu.add_argument("--out", type=Path, default=None,
                    help="config file (default configs/tuned-<dataset>.json)")
    tu.add_argument("--trials", type=int, default=60)
    abp = sub.add_parser("ab", help="offline A/B of two config files on the test split")
    _common(abp)
    abp.add_argument("--a", type=Path, required=True)
    abp.add_argument("--b", type=Path, required=True)
    abp.add_argument("--experiment", default="offline-ab")
    abp.add_argument("--ab-split", default="control=50,treatment=50",
                     help="variant weights; the first variant stands for A, the last for B")
    abp.add_argument("--out", type=Path, default=None)
    return parser


def main(
    argv: Sequence[str] | None = None,
    *,
    encoder: Encoder | None = None,
    dataset: Dataset | None = None,
) -> int:
    """Entry point: ``main(["evaluate", "--dataset", "movielens", ...])``.

    Args:
        argv: the arguments after the program name; ``None`` for ``sys.argv[1:]``.
        encoder: replaces the vLLM encoder (tests pass a deterministic one).
        dataset: a loaded :class:`~storage.datasets.Dataset` instead of
            ``--dataset``/``--data-dir``.

    Returns:
        The exit status (0).

    Raises:
        SystemExit: bad arguments, an unknown dataset, a missing data folder or an invalid
            config file, with a message naming it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    from serve.settings import SettingsError, load_settings

    try:
        args.settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"portrait {args.command}: configuration error: {exc}") from None
    try:
        return COMMANDS[args.command](args, encoder=encoder, dataset=dataset)
    except (DatasetUnavailable, InvalidConfigFile) as exc:
        raise SystemExit(f"portrait {args.command}: {exc}") from None


if __name__ == "__main__":
    sys.exit(main())
