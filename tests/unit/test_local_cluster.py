"""The local multi-node cluster's layout: every node's ports are its own."""

from __future__ import annotations

import re

import pytest

from serve import local_cluster


def ports(args: list[str]) -> list[int]:
    """The ports a node takes: the fixed ones, then its worker-process range (min, max)."""
    fixed, span = [], []
    for arg in args:
        if m := re.fullmatch(r"--(?:min|max)-worker-port=(\d+)", arg):
            span.append(int(m.group(1)))
        elif m := re.fullmatch(r"--[a-z-]+-port=(\d+)", arg):
            fixed.append(int(m.group(1)))
    return fixed + span


def test_worker_nodes_never_share_a_port_with_each_other_or_the_head() -> None:
    taken = {local_cluster.HEAD_PORT}
    for k in range(local_cluster.MAX_WORKERS):
        args = local_cluster.worker_args(k, cpus=1)
        assert f"--address={local_cluster.HEAD_ADDRESS}" in args
        mine = ports(args)
        low, high = mine[-2], mine[-1]  # the worker-process range
        assert low < high
        fixed = set(mine[:-2])
        assert len(fixed) == len(mine) - 2 and not fixed & taken, k
        assert not any(low <= p <= high for p in taken), k
        taken |= fixed | set(range(low, high + 1))


@pytest.mark.parametrize("k", [-1, local_cluster.MAX_WORKERS])
def test_a_worker_index_out_of_range_is_refused(k: int) -> None:
    with pytest.raises(ValueError, match="worker index"):
        local_cluster.worker_args(k, cpus=1)


def test_up_refuses_bad_sizes_before_starting_anything() -> None:
    with pytest.raises(ValueError, match="--workers"):
        local_cluster.up(workers=local_cluster.MAX_WORKERS + 1)
    with pytest.raises(ValueError, match="cpus"):
        local_cluster.up(workers=1, worker_cpus=0)


def test_joining_a_cluster_that_is_not_there_is_a_clear_error() -> None:
    """Ray itself retries an unreachable head for ever, flooding the terminal."""
    import socket

    from serve.service import _check_reachable
    from serve.settings import SettingsError

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SettingsError, match=r"PORTRAIT_RAY_ADDRESS: no Ray head answers"):
        _check_reachable(f"127.0.0.1:{port}", timeout_s=2)
    with pytest.raises(SettingsError, match="expected host:port"):
        _check_reachable("nonsense")


def test_killing_a_worker_that_is_not_running_names_it() -> None:
    k = local_cluster.MAX_WORKERS - 1  # no test starts that many workers
    with pytest.raises(ValueError, match=f"no worker node {k} is running"):
        local_cluster.kill_worker(k)
