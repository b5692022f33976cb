"""Starting a vLLM engine in this process: the one start-up the encoder and the summarizer share.

:func:`vllm_start` sets the vLLM process environment (only variables that are unset), gives
torch one thread per bound CPU, imports vLLM and keeps the host's global RNGs as they were
while the caller builds its ``vllm.LLM`` inside the block. Nothing here imports torch or vLLM
at module import.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class EngineStart:
    """What :func:`vllm_start` did: the variables it set, torch's thread count and the time
    the vLLM import took."""

    env_applied: dict[str, str] = field(default_factory=dict)
    torch_threads: int | None = None
    import_seconds: float = 0.0


def apply_vllm_env_defaults(cuda: bool, kvcache_gib: int = 1,
                            threads_bind: str | None = None) -> dict[str, str]:
    """Set the vLLM environment this process needs, leaving variables already set alone.

    Returns what it set. Must run before ``import vllm`` (vllm.envs reads lazily, but some
    values are cached at engine creation).
    """
    wanted = {
        # In-process engine core: no fork/spawn of an engine process, so no __main__ guard
        # is needed and a Ray replica owns exactly one process.
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }
    if not cuda:
        wanted["VLLM_CPU_KVCACHE_SPACE"] = str(kvcache_gib)
        wanted["VLLM_CPU_OMP_THREADS_BIND"] = threads_bind or default_cpu_threads_bind()
    applied = {}
    for k, v in wanted.items():
        if not os.environ.get(k):
            os.environ[k] = v
            applied[k] = v
    return applied


@contextlib.contextmanager
def preserved_global_rngs(torch: Any) -> Iterator[None]:
    """Importing vLLM and starting an in-process engine reseed the global random / numpy /
    torch RNGs (seed=0); the host process gets its RNG state back."""
    state = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])
        torch.set_rng_state(state[2])


@contextlib.contextmanager
def vllm_start(cuda: bool, kvcache_gib: int = 1,
               threads_bind: str | None = None) -> Iterator[EngineStart]:
    """The block in which to build a ``vllm.LLM``: environment set, threads sized, vLLM
    imported, the global RNGs restored on leaving.

    Must be entered on the thread that will run the engine: torch's thread count is per
    thread, and vLLM's CPU worker disables ``set_num_threads`` once the engine starts.
    """
    import torch

    start = EngineStart(env_applied=apply_vllm_env_defaults(cuda, kvcache_gib, threads_bind))
    if not cuda:
        # One torch thread per bound CPU. Ray sets OMP_NUM_THREADS to the actor's num_cpus
        # (1 by default), which ran the engine single-threaded inside a Serve replica at
        # about half speed.
        threads = bound_cpu_count(os.environ.get("VLLM_CPU_OMP_THREADS_BIND", ""))
        if threads:
            torch.set_num_threads(threads)
    start.torch_threads = torch.get_num_threads()
    with preserved_global_rngs(torch):
        t0 = time.perf_counter()
        import vllm  # noqa: F401  (vllm/__init__ is lazy: the LLM import is the real one)
        from vllm import LLM  # noqa: F401

        start.import_seconds = time.perf_counter() - t0
        yield start


def bf16_supported(cuda: bool) -> bool:
    """Native bfloat16 on this machine: CUDA bf16, or CPU AVX512-BF16 / AMX."""
    import torch

    if cuda:
        return bool(torch.cuda.is_bf16_supported())
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None:
            # A private torch API: if it misbehaves, fall back to the CPU flags below.
            with contextlib.suppress(Exception):
                if fn():
                    return True
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    with contextlib.suppress(OSError):  # no /proc (not Linux): no flags known
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    return set()


def default_cpu_threads_bind() -> str:
    """Every CPU in this process's affinity mask, as ``VLLM_CPU_OMP_THREADS_BIND`` wants it."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = list(range(os.cpu_count() or 1))
    return ",".join(str(c) for c in cpus)


def bound_cpu_count(bind: str) -> int | None:
    """How many CPUs a ``VLLM_CPU_OMP_THREADS_BIND`` list names ("0-3", "0,2,4", "0-1,6");
    None for vLLM's keywords ("auto", "nobind") and for several ranks ("0-3|4-7")."""
    if not bind or "|" in bind or not bind[0].isdigit():
        return None
    cpus: set[int] = set()
    for part in bind.split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            return None
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return len(cpus) or None


__all__ = [
    "EngineStart", "apply_vllm_env_defaults", "bf16_supported", "bound_cpu_count", "cpu_flags",
    "default_cpu_threads_bind", "preserved_global_rngs", "vllm_start",
]
