"""The item-space retrain on the Ray system after the shard set shrank (2 -> 4 -> 1).

Measured by a user before: every ``POST /v1/item-space/retrain`` answered 503
``RayTaskError(ShardUnavailable)`` for minutes, because the retrain actor told the shard
handles it was deployed with, retired ones included. Publication now goes through the one
publication actor, which reaches the shards of the live topology.
"""

from __future__ import annotations

import time

import httpx
import pytest

ray = pytest.importorskip("ray")

from actors.catalog_registry import NAMESPACE  # noqa: E402
from encoding.settings import EncoderSettings  # noqa: E402
from serve.service import start_service  # noqa: E402
from serve.settings import Settings  # noqa: E402
from tests.conftest import scratch_database  # noqa: E402
from tests.live_server import free_port  # noqa: E402

pytestmark = pytest.mark.ray
T0 = 1_700_000_000
ITEMS = [{"id": f"m{i}", "title": f"Film {i}", "description": f"a film numbered {i}",
          "tags": ["Drama"]} for i in range(12)]


@pytest.fixture(scope="module")
def service(embedded_pg, tmp_path_factory):
    # The shipped config ranks with collaborative vectors, so the retrain is on; a retrain
    # is due after 30 new events, and removed shards retire 2 s after a resize.
    with scratch_database(embedded_pg.url) as url:
        settings = Settings(
            data_dir=tmp_path_factory.mktemp("data"), port=free_port(), shards=2,
            catalog_refresh_s=1.0, retrain_every_events=30,
            encoder=EncoderSettings(dtype="float32", num_cpus=1),
        )
        svc = start_service(settings, url, load_demo_catalog=False)
        try:
            yield svc
        finally:
            svc.stop()


def test_a_background_retrain_after_a_shrink_reaches_the_remaining_shard(service) -> None:
    with httpx.Client(base_url=service.url, timeout=120, headers=service.headers()) as http:
        assert http.post("/v1/items", json={"items": ITEMS}).status_code == 200
        for count in (4, 1):
            resp = http.post("/v1/shards", json={"count": count})
            assert resp.status_code == 200, resp.text
        time.sleep(4)  # past the grace period: shards 1-3 are retired
        explicit = http.post("/v1/item-space/retrain")  # too little data yet: a skip
        assert explicit.status_code == 200, explicit.text
        events = [{"type": "view", "event_id": f"u{u}-{k}", "user_id": f"u{u}",
                   "occurred_at": T0 + 10 * u + k, "item_id": item}
                  for u in range(20) for k, item in enumerate((f"m{u % 3}", f"m{3 + u % 3}"))]
        assert http.post("/v1/events", json={"events": events}).status_code == 200
        shard = ray.get_actor("portrait-shard-0", namespace=NAMESPACE)
        deadline = time.monotonic() + 25  # under the shard's own 30 s refresh
        while time.monotonic() < deadline:
            if ray.get(shard.catalog_key.remote(), timeout=30)[1] >= 1:
                break
            time.sleep(0.5)
        info = http.get("/v1/item-space").json()
        assert info["version"] >= 1 and info["failures"] == 0, info
        assert ray.get(shard.catalog_key.remote(), timeout=30)[1] == info["version"]
        again = http.post("/v1/item-space/retrain")
        assert again.status_code == 200, again.text
        assert again.json()["version"] > info["version"]
