"""Detached actors that follow a redeploy.

The shards and the retrain actor are named and detached, so that every ingress replica finds
the same ones and a replica's death does not take them down. But a redeploy (new settings, or
new code in a new image) on a long-lived cluster used to find the old actors by name and keep
them: they went on serving the old configuration and code. Each such actor is now created with
a *generation*, a digest of its arguments and of the code it runs; a deployment that finds an
actor of another generation retires it (shards first write their users' snapshots) and starts
its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import logging
import time
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

_log = logging.getLogger(__name__)

# What the detached actors run: a change to any of these files is a new generation.
_PACKAGES = ("portrait", "actors", "storage")


@cache
def code_digest() -> str:
    """A digest of the sources of the packages the detached actors run."""
    digest = hashlib.sha256()
    for package in _PACKAGES:
        module_file = importlib.import_module(package).__file__
        assert module_file is not None
        root = Path(module_file).parent
        for path in sorted(root.rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _canonical(value: Any) -> Any:
    """``value`` as JSON-ready data that is equal across processes (a frozenset's repr is
    not: string hashing is randomised per process)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__type__": type(value).__qualname__,
                **{f.name: _canonical(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (set, frozenset)):
        return sorted((_canonical(v) for v in value), key=json.dumps)
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if getattr(type(value), "__repr__", None) is object.__repr__ and hasattr(value, "__dict__"):
        # A plain object (VariantPolicy): its public attributes; the default repr is an address.
        return {"__type__": type(value).__qualname__,
                **{k: _canonical(v) for k, v in vars(value).items() if not k.startswith("_")}}
    return repr(value)  # paths; actor handles, whose repr names the actor


def generation(identity: Any) -> str:
    """The generation of an actor whose configuration is ``identity`` (plain data, or actor
    handles) running this code."""
    digest = hashlib.sha256(code_digest().encode())
    digest.update(json.dumps(_canonical(identity), sort_keys=True).encode())
    return digest.hexdigest()[:16]


def detached_actor(
    actor_class: Any, name: str, namespace: str, arguments: tuple[Any, ...], identity: Any,
    **options: Any,
) -> Any:
    """The named detached actor of this generation: the running one if it is, else a new one
    after the running one is retired.

    Args:
        actor_class: a Ray actor class whose constructor takes ``*arguments`` and a
            ``generation`` keyword, and answers it from a ``generation()`` method.
        name, namespace: where it is registered.
        arguments: its constructor's arguments.
        identity: what of them defines its behaviour (see :func:`generation`); connectors
            that hold no configuration need not be in it.
        options: more Ray actor options (a scheduling strategy).
    """
    wanted = generation(identity)
    options = {"name": name, "namespace": namespace, "lifetime": "detached", **options}
    handle = actor_class.options(get_if_exists=True, **options).remote(
        *arguments, generation=wanted
    )
    try:
        running = ray.get(handle.generation.remote(), timeout=60)
    except AttributeError:  # code from before generations existed
        running = None
    except (RayActorError, RayTaskError, GetTimeoutError) as exc:
        _log.warning("%s did not say its generation (%s); replacing it", name, exc)
        running = None
    if running == wanted:
        return handle
    _log.warning("retiring %s of generation %s: this deployment is generation %s",
                 name, running, wanted)
    if hasattr(handle, "passivate_all"):  # shards: users' snapshots first (an optimisation)
        try:
            ray.get(handle.passivate_all.remote(), timeout=60)
        except Exception as exc:
            _log.warning("%s did not write its snapshots (%r); its users replay the log",
                         name, exc)
    ray.kill(handle, no_restart=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the name is freed once the GCS sees the death
        try:
            ray.get_actor(name, namespace=namespace)
        except ValueError:
            break
        time.sleep(0.1)
    return actor_class.options(get_if_exists=True, **options).remote(
        *arguments, generation=wanted
    )


__all__ = ["code_digest", "detached_actor", "generation"]
