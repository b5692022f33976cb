"""The systems the system tier runs its scenarios on, behind one fixture, ``system``.

Each is a whole Portrait on its own database on the embedded Postgres, with a small catalog
upserted through the API, reached only through the HTTP API with an admin token:

* ``in_process``: :func:`serve.composition.in_process` (the same routes and shards in one
  process, the hashing test encoder), called through httpx's ASGI transport; fast.
* ``ray``: :func:`serve.service.start_service`, the system ``./dev run`` starts (Ray,
  Serve, shard actors, the vLLM encoder on CPU) on loopback, over real HTTP; marked ``ray``,
  so ``./dev test fast`` leaves it out. It starts once for the module (about half a minute).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from actors.text_features import ThreadedEncoder
from portrait.tuned_config import TunedConfig
from serve.service import stop_ray
from serve.settings import Settings
from storage.embedded import EmbeddedPostgres
from storage.migrate import upgrade
from tests import auth
from tests.conftest import in_thread, scratch_database
from tests.fakes import HashingEncoder
from tests.live_server import free_port

# The catalog every system starts with: two genres, so that what a user did shows in what
# they are recommended whatever the encoder.
ITEMS = [
    {"id": f"s{i}", "title": f"Star voyage {i}", "description": "Spaceships and aliens.",
     "tags": ["Sci-Fi"]} for i in range(1, 7)
] + [
    {"id": f"r{i}", "title": f"Paris love {i}", "description": "Two people fall in love.",
     "tags": ["Romance"]} for i in range(1, 7)
]


@dataclass
class SystemUnderTest:
    """How a test reaches one running system: its address, and an ASGI app when it runs in
    this process (no socket)."""

    name: str
    base_url: str
    headers: dict[str, str]
    app: Any = None

    def client(self, *, token: bool = True) -> httpx.AsyncClient:
        """An HTTP client of the system, with the admin token unless ``token`` is False."""
        transport = None if self.app is None else httpx.ASGITransport(app=self.app)
        return httpx.AsyncClient(base_url=self.base_url, transport=transport, timeout=120,
                                 headers=self.headers if token else {})


@pytest.fixture(scope="module")
def plain_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untuned defaults, text vectors only: the scenarios reason about content, not about
    the shipped tuned blend."""
    path = tmp_path_factory.mktemp("config") / "plain.json"
    path.write_text(json.dumps(TunedConfig().to_document()))
    return path


async def _in_process(database: str, plain_config: Path) -> AsyncIterator[SystemUnderTest]:
    settings = Settings(shards=2, snapshot_every=3, profile_config=plain_config)
    system = auth.system(settings, database, ThreadedEncoder(HashingEncoder(dim=32)))
    try:
        yield SystemUnderTest("in_process", "http://portrait", await auth.headers(system),
                              app=system.app)
    finally:
        await system.close()


async def _ray(database: str, plain_config: Path, data_dir: Path
               ) -> AsyncIterator[SystemUnderTest]:
    from serve.service import start_service

    # The vLLM encoder in float32 on one CPU, as tests/serve run it; built from the class
    # the settings use, wherever that lives.
    encoder = type(Settings().encoder)(dtype="float32", num_cpus=1)
    settings = Settings(
        data_dir=data_dir, port=free_port(), shards=2, snapshot_every=3, encoder=encoder,
        profile_config=plain_config,
    )
    import ray

    # Ray as start_service starts it, but here, in the main thread: a driver started in
    # another thread gave its actors an address nobody answered on (ActorUnavailableError).
    if ray.is_initialized():  # a Ray an earlier module left in this process (seen in CI)
        stop_ray(None)
    ray.init(namespace="portrait", include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    # The rest in a worker thread: start-up runs event loops of its own.
    service = in_thread(lambda: start_service(settings, database, load_demo_catalog=False))
    try:
        yield SystemUnderTest("ray", service.url, service.headers())
    finally:
        in_thread(service.stop)


@pytest_asyncio.fixture(loop_scope="session", scope="module", params=[
    "in_process", pytest.param("ray", marks=pytest.mark.ray)])
async def system(request: pytest.FixtureRequest, embedded_pg: EmbeddedPostgres,
                 plain_config: Path, tmp_path_factory: pytest.TempPathFactory
                 ) -> AsyncIterator[SystemUnderTest]:
    """One running system, on a database of its own, with :data:`ITEMS` in its catalog."""
    with scratch_database(embedded_pg.url) as database:
        in_thread(lambda: upgrade(database))
        if request.param == "ray":
            started = _ray(database, plain_config, tmp_path_factory.mktemp("data"))
        else:
            started = _in_process(database, plain_config)
        async for sut in started:
            async with sut.client() as http:
                resp = await http.post("/v1/items", json={"items": ITEMS})
                assert resp.status_code == 200, resp.text
            yield sut


@pytest_asyncio.fixture(loop_scope="session")
async def http(system: SystemUnderTest) -> AsyncIterator[httpx.AsyncClient]:
    """The admin's client of the system."""
    async with system.client() as client:
        yield client
