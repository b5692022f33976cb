"""A multi-node Ray cluster on this machine: a head and worker nodes started with ``ray start``.

Every node is its own raylet with its own object store, resources and ports, so the service
meets what a real cluster does (actors on other nodes, a node that dies with everything on
it) without a second machine. ``portrait cluster up|down|status|kill-worker``
(``./dev cluster ...``) runs it; the multi-node test uses the same layout.

The nodes are started with ``--node-ip-address=127.0.0.1``, but Ray takes loopback to mean
"this machine": it registers the machine's own address and its raylets and GCS listen on
all interfaces. So Ray's token authentication stays on (Ray 2.60 creates a token for a new
cluster in ``~/.ray/auth_token`` and every process on this machine reads it); only the tests'
throw-away clusters turn it off.

Ports: the head listens on ``HEAD_PORT``; worker ``k`` takes ``6400 + 20 k`` upwards for its
raylet, object manager, agents and metrics, and ``21000 + 1000 k`` upwards for its worker
processes, so nodes never collide with each other or with the head's defaults.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

HEAD_PORT = 6390
HEAD_ADDRESS = f"127.0.0.1:{HEAD_PORT}"
MAX_WORKERS = 8
AUTH_MODE = "token"


def _ray(*args: str) -> subprocess.CompletedProcess[str]:
    quiet = ["--disable-usage-stats"] if args[0] == "start" else []
    # A head starts in token mode by itself, a joining node only when told (it refuses the
    # head otherwise); the caller's RAY_AUTH_MODE wins (the tests' "disabled").
    env = {"RAY_AUTH_MODE": AUTH_MODE, **os.environ}
    return subprocess.run([str(Path(sys.executable).parent / "ray"), *args, *quiet],
                          check=True, capture_output=True, text=True, timeout=120, env=env)


def head_args(cpus: int) -> list[str]:
    return ["--head", "--node-ip-address=127.0.0.1", f"--port={HEAD_PORT}",
            f"--num-cpus={cpus}", "--include-dashboard=false"]


def worker_args(k: int, cpus: int) -> list[str]:
    """Worker node ``k``'s ``ray start`` arguments: its own ports, the head's address."""
    if not 0 <= k < MAX_WORKERS:
        raise ValueError(f"worker index must be in 0..{MAX_WORKERS - 1}, got {k}")
    base = node_manager_port(k)
    return [f"--address={HEAD_ADDRESS}", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}",
            f"--node-manager-port={base}", f"--object-manager-port={base + 1}",
            f"--dashboard-agent-listen-port={base + 2}", f"--dashboard-agent-grpc-port={base + 3}",
            f"--runtime-env-agent-port={base + 4}", f"--metrics-export-port={base + 5}",
            f"--min-worker-port={21000 + 1000 * k}", f"--max-worker-port={21999 + 1000 * k}"]


def node_manager_port(k: int) -> int:
    return 6400 + 20 * k


def up(workers: int = 2, head_cpus: int = 2, worker_cpus: int = 1) -> str:
    """Start the head and ``workers`` worker nodes; returns the address to connect to."""
    if not 0 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be in 0..{MAX_WORKERS}, got {workers}")
    if head_cpus < 1 or worker_cpus < 1:
        raise ValueError("--head-cpus and --worker-cpus must be >= 1")
    _ray("start", *head_args(head_cpus))
    try:
        for k in range(workers):
            _ray("start", *worker_args(k, worker_cpus))
    except subprocess.CalledProcessError:
        down()
        raise
    return HEAD_ADDRESS


def down() -> None:
    """Stop every Ray node this machine runs (``ray stop --force``)."""
    _ray("stop", "--force")


def kill_worker(k: int) -> None:
    """What a machine's loss does to worker node ``k``: its raylet (found by its node-manager
    port) and every process it started (the workers hosting actors) die at once."""
    import psutil

    flag = f"--node_manager_port={node_manager_port(k)}"
    raylet = next((psutil.Process(p.pid) for p in psutil.process_iter(["cmdline"])
                   if p.info["cmdline"] and "raylet" in p.info["cmdline"][0]
                   and flag in p.info["cmdline"]), None)
    if raylet is None:
        raise ValueError(f"no worker node {k} is running")
    for proc in [*raylet.children(recursive=True), raylet]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)


def head_answers(address: str, timeout_s: float = 5.0) -> None:
    """Whether a Ray head listens at ``host:port``: ValueError for a malformed address,
    ConnectionError when nothing answers (Ray itself would retry it for ever)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise ConnectionError(str(exc)) from None


def nodes() -> list[dict[str, Any]]:
    """The cluster's nodes as Ray reports them (connects to ``HEAD_ADDRESS`` if needed)."""
    os.environ.setdefault("RAY_AUTH_MODE", AUTH_MODE)  # read when Ray is imported
    import ray

    if not ray.is_initialized():
        head_answers(HEAD_ADDRESS)
        ray.init(address=HEAD_ADDRESS, log_to_driver=False)
    return [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]


__all__ = ["HEAD_ADDRESS", "HEAD_PORT", "down", "head_answers", "head_args", "kill_worker",
           "nodes", "up", "worker_args"]
