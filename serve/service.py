"""Starting and stopping the whole Ray system on one machine: Ray, Serve, the app, the catalog.

Used by ``portrait run``, the end-to-end tests and the HTTP benchmark, so all three exercise
the same start-up path.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.catalog_registry import NAMESPACE
from serve.composition import APP_NAME, build_app, store_factory
from serve.local_cluster import head_answers
from serve.secret_key import key_file, load_secret_key
from serve.settings import Settings, SettingsError
from storage.encryption import load_master_keys
from storage.stores import PASSWORD_ENV, password_of


@dataclass
class RunningService:
    url: str
    settings: Settings
    database_url: str
    token: str | None = None  # the local admin token (None with PORTRAIT_AUTH=off)

    def headers(self) -> dict[str, str]:
        """What a local client sends: the admin token, if tokens are checked."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def stop(self) -> None:
        """Passivate users (writing their snapshots), then stop Serve and Ray."""
        import ray

        from actors.shard import existing_shards

        try:
            shards = existing_shards(self.settings.shards.count)
            ray.get([s.passivate_all.remote() for s in shards], timeout=30)
        except Exception as exc:  # best effort: snapshots are an optimisation
            print(f"warning: snapshots on shutdown failed ({exc!r}); users replay from the log")
        stop_ray(self.settings)


def stop_ray(settings: Settings | None) -> None:
    """Stop Serve, then Portrait's actors on a joined cluster (``settings`` names it), then
    this process's Ray, without Ray's reports of the actors that stopping kills."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        return
    with without_kill_reports():
        serve.shutdown()  # type: ignore[no-untyped-call]
        if settings is not None and settings.api.ray_address:
            # A cluster this run joined outlives it: stop the detached actors it started
            # (shards, directory, registry, retrain), as stopping a Ray of its own would, so
            # that the next run starts from the log with PORTRAIT_SHARDS, not on actors
            # holding connections to a database that has since stopped.
            for actor in ray.util.list_named_actors(all_namespaces=True):
                if actor["namespace"] == NAMESPACE:
                    with contextlib.suppress(Exception):
                        ray.kill(ray.get_actor(actor["name"], namespace=NAMESPACE))
        ray.shutdown()


# What Ray says of a call to an actor that a shutdown killed.
KILLED_BY_RAY = "killed by `ray.kill`"


@contextlib.contextmanager
def without_kill_reports() -> Iterator[None]:
    """Leave out the driver's reports of calls to actors killed on purpose, while inside.

    ``serve.shutdown`` ends with the Serve controller's ``graceful_shutdown`` killing the
    controller itself; Ray then reports that call (and any other waiting on an actor the
    shutdown kills) to the driver, which prints every error its job reports whatever
    ``log_to_driver`` says: ``(raylet) Task ServeController.graceful_shutdown failed ...
    The actor is dead because it was killed by `ray.kill`.`` After a clean Ctrl-C those
    lines read like a crash. Other reports still print.
    """
    from ray._private import worker

    printing = worker.print_to_stdstream

    def filtered(data: dict[str, Any], ignore_prefix: bool) -> None:
        lines = [line for line in data.get("lines", ()) if KILLED_BY_RAY not in line]
        if lines:
            printing({**data, "lines": lines}, ignore_prefix)

    worker.print_to_stdstream = filtered
    try:
        yield
    finally:
        worker.print_to_stdstream = printing


def interruptible(work: Callable[[], int], what: str = "start-up") -> int:
    """``work``'s exit status, or 130 when Ctrl-C (SIGINT) ends it: then one line, no
    traceback, and the clean-up on the way out (``finally`` blocks, context managers: the
    embedded Postgres, :func:`stop_ray`) runs to its end, further Ctrl-Cs ignored."""

    def interrupt(*_: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the clean-up below is not cut short
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        return work()
    except KeyboardInterrupt:
        print(f"\ninterrupted during {what}: stopped", flush=True)
        return 130
    finally:
        signal.signal(signal.SIGINT, previous)


def wait_ready(url: str, timeout_s: float = 300.0) -> dict[str, Any]:
    """Poll ``/readyz`` until it answers 200."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=60) as resp:
                ready: dict[str, Any] = json.loads(resp.read())
                return ready
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            last = exc
            time.sleep(0.5)
    raise TimeoutError(f"service not ready after {timeout_s:.0f}s: {last}")


def start_service(
    settings: Settings, database_url: str, *, load_demo_catalog: bool = True
) -> RunningService:
    """Migrate, start Ray (loopback only) and Serve, deploy, import the demo catalog if the
    catalog is empty, and wait until ready."""
    import ray
    from ray import serve

    from storage.migrate import upgrade

    upgrade(database_url)
    # Ray's processes get no database password in their arguments (StoreFactory drops it);
    # they read it from the environment they inherit from this process.
    password = password_of(database_url)
    if password is not None and settings.security.secrets.database_password is None:
        os.environ[PASSWORD_ENV] = password
    if settings.security.encryption:
        # Like the secret key: made on the first run, and an absolute path for the replicas.
        # A wrong or missing key fails here, with the message, before anything starts.
        settings = settings.replace(security={"master_key_file": master_key_path(settings)})
        load_master_keys(settings.security.master_key_file, create=True)
        asyncio.run(_check_master_key(settings, database_url))
    token = None
    if settings.security.auth or settings.security.pseudonymize:
        # The replicas read the key themselves; make it (first run) and give them an
        # absolute path to it.
        key = load_secret_key(settings, create=True)
        settings = settings.replace(security={"secret_key_file": key_file(settings).resolve()})
        if settings.security.auth:
            token = asyncio.run(_dev_token(settings, database_url, key))
    # The ingress replica serves HTTP itself (throughput mode) and, on shutdown, keeps
    # serving for a draining period (30 s by default) so that a load balancer can stop
    # sending it traffic. A local run has no load balancer: drain for one second, or Ctrl-C
    # would take over 30 s. Read by the replicas, so set before Ray starts them.
    os.environ.setdefault("RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S", "1")
    if not ray.is_initialized() and settings.api.ray_address:
        # Ray itself retries an unreachable head for ever
        _check_reachable(settings.api.ray_address)
        try:
            ray.init(address=settings.api.ray_address, namespace="portrait", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SettingsError(f"PORTRAIT_RAY_ADDRESS: cannot join a Ray cluster at "
                                f"{settings.api.ray_address!r} ({exc})") from None
    elif not ray.is_initialized():
        ray.init(
            namespace="portrait",
            include_dashboard=False,
            # Ray's internal ports bind to this address: loopback keeps them off the network.
            _node_ip_address="127.0.0.1",
            log_to_driver=False,
        )
    try:
        serve.start(proxy_location=settings.api.proxy_location,
                    http_options={"host": settings.api.host, "port": settings.api.port})
        serve.run(build_app(settings, database_url), name=APP_NAME, route_prefix="/",
                  blocking=False)
        url = f"http://{settings.api.host}:{settings.api.port}"
        ready = wait_ready(url)
        service = RunningService(url, settings, database_url, token)
        if load_demo_catalog and ready.get("catalog_version") == 0:
            _import_demo_catalog(url, settings.api.max_batch_events, service.headers())
    except KeyboardInterrupt:
        stop_ray(settings)  # what started so far; no users to snapshot yet
        raise
    return service


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A clear error for a Ray head that is not there (``host:port``)."""
    try:
        head_answers(address, timeout_s)
    except ValueError:
        raise SettingsError(f"PORTRAIT_RAY_ADDRESS: expected host:port, got {address!r}") from None
    except ConnectionError as exc:
        raise SettingsError(f"PORTRAIT_RAY_ADDRESS: no Ray head answers at {address} ({exc}); "
                            "start one with `./dev cluster up`") from None


def master_key_path(settings: Settings) -> Path:
    return (settings.security.master_key_file or settings.storage.data_dir / "master.key").resolve()


async def _check_master_key(settings: Settings, database_url: str) -> None:
    stores = await dataclasses.replace(store_factory(settings, database_url), pool_size=1).open()
    await stores.close()


async def _dev_token(settings: Settings, database_url: str, key: bytes) -> str:
    from serve.token_admin import dev_token
    from storage.stores import open_stores

    stores = open_stores(database_url, pool_size=1)
    try:
        return await dev_token(stores.tokens, key, settings.storage.data_dir / "dev-token")
    finally:
        await stores.close()


def _import_demo_catalog(url: str, batch: int, headers: dict[str, str]) -> None:
    """The bundled MovieLens movies, through the service's own ``POST /v1/items``: encoded by
    its encoder and published to every shard as each batch lands. (A side channel into the
    catalog store left the shards on an empty catalog when a request came first, and a Serve
    handle made here outlived its event loop.)"""
    from portrait.catalog import to_dict
    from storage.datasets.movielens import load_movielens

    items = [to_dict(i) for i in load_movielens().items]
    print(f"catalog is empty: importing the bundled MovieLens movies ({len(items)}, encoded "
          "by vLLM)", flush=True)
    started = time.perf_counter()
    inserted = 0
    for start in range(0, len(items), batch):
        body = json.dumps({"items": items[start : start + batch]}).encode()
        request = urllib.request.Request(
            f"{url}/v1/items", data=body, headers={"content-type": "application/json", **headers}
        )
        with urllib.request.urlopen(request, timeout=600) as resp:
            inserted += int(json.loads(resp.read())["inserted"])
        print(f"  {min(start + batch, len(items))}/{len(items)} items", flush=True)
    print(f"imported {inserted} items in {time.perf_counter() - started:.1f}s", flush=True)


def run_service(settings: Settings, database_url: str, *, load_demo_catalog: bool = True) -> int:
    """``portrait run``: start, print how to call it, wait for Ctrl-C, stop cleanly."""
    service = start_service(settings, database_url, load_demo_catalog=load_demo_catalog)
    url = service.url
    now = int(time.time())
    demo = {"events": [
        {"type": "rating", "event_id": "demo-1", "user_id": "demo", "occurred_at": now,
         "item_id": "260", "rating": 5},
        {"type": "search", "event_id": "demo-2", "user_id": "demo", "occurred_at": now,
         "query": "space adventure with rebels"},
    ]}
    auth = ""
    if service.token:
        auth = " -H \"authorization: Bearer $PORTRAIT_TOKEN\""
        print(f"""
Your local admin token (kept in {settings.storage.data_dir / 'dev-token'}; make others with
`portrait token create`):

  export PORTRAIT_TOKEN={service.token}""", flush=True)
    print(f"""
Portrait is running at {url}   (API docs: {url}/docs, metrics: {url}/metrics)

Try:
  curl -s -X POST {url}/v1/events{auth} -H 'content-type: application/json' -d '{json.dumps(demo)}'
  curl -s{auth} '{url}/v1/users/demo/recommendations?k=5'

Press Ctrl-C to stop.""", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("\nstopping: writing snapshots, shutting down Serve and Ray...", flush=True)
    service.stop()
    print("stopped.", flush=True)
    return 0
