"""``portrait run`` (the service) and ``portrait cluster up|down|status|kill-worker`` (a
multi-node Ray cluster on this machine, :mod:`serve.local_cluster`)."""

from __future__ import annotations

import argparse
import sys

from serve.cli.command import Subcommands
from serve.cli.database import database
from serve.settings import Settings


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    """The service on the configured (or embedded) database until Ctrl-C."""
    from serve.service import interruptible, run_service

    def run() -> int:
        with database(settings) as url:
            return run_service(settings, url, load_demo_catalog=not args.no_catalog)

    return interruptible(run)  # Ctrl-C before the service is up: one line, a clean stop


def cmd_cluster(args: argparse.Namespace, settings: Settings) -> int:
    """Start, stop, list or break the nodes of a local multi-node Ray cluster."""
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


def register(sub: Subcommands) -> None:
    """``run`` and ``cluster up|down|status|kill-worker``."""
    run = sub.add_parser("run", help="start the service (embedded defaults)")
    run.add_argument("--no-catalog", action="store_true", help="do not import the bundled catalog")
    run.set_defaults(handler=cmd_run)
    cl = sub.add_parser("cluster", help="a multi-node Ray cluster on this machine")
    cl.set_defaults(handler=cmd_cluster)
    actions = cl.add_subparsers(dest="action", required=True)
    up = actions.add_parser("up", help="start a head and worker nodes on 127.0.0.1")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--head-cpus", type=int, default=2)
    up.add_argument("--worker-cpus", type=int, default=1)
    actions.add_parser("down", help="stop every Ray node on this machine")
    actions.add_parser("status", help="the nodes and their CPUs")
    kw = actions.add_parser("kill-worker", help="kill worker node K as a machine loss would")
    kw.add_argument("index", type=int)


__all__ = ["cmd_cluster", "cmd_run", "register"]
