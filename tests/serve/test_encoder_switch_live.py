"""An encoder switch under a running Ray service: MiniLM, then a perturbed copy of it (a real,
different encoder) switched to by `portrait encoder switch` while recommendations are being
served, and rolled back."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

ray = pytest.importorskip("ray")

from actors.catalog_registry import NAMESPACE  # noqa: E402
from encoding.settings import EncoderSettings  # noqa: E402
from serve.cli import main  # noqa: E402
from serve.service import start_service  # noqa: E402
from serve.settings import Settings  # noqa: E402
from storage.embedded import EmbeddedPostgres  # noqa: E402
from tests.conftest import scratch_database  # noqa: E402
from tests.encoder_folders import perturbed_minilm  # noqa: E402
from tests.live_server import free_port  # noqa: E402

pytestmark = pytest.mark.ray
T0 = 1_700_000_000
ITEMS = [{"id": f"m{i}", "title": f"Film {i}", "description": d, "tags": ["Drama"]}
         for i, d in enumerate(["space ships at war", "love in paris", "a detective in fog",
                                "a heist in a casino", "a cooking contest", "robots awaken"])]


def test_a_switch_under_load_refolds_profiles_and_fails_no_request(
    embedded_pg: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = perturbed_minilm(tmp_path / "tuned")
    with scratch_database(embedded_pg.url) as url:
        settings = Settings(data_dir=tmp_path / "data", port=free_port(), shards=1,
                            catalog_refresh_s=1.0,
                            encoder=EncoderSettings(dtype="float32", num_cpus=1))
        svc = start_service(settings, url, load_demo_catalog=False)
        try:
            monkeypatch.setenv("PORTRAIT_DATABASE_URL", url)
            monkeypatch.setenv("PORTRAIT_DATA_DIR", str(tmp_path / "data"))
            with httpx.Client(base_url=svc.url, timeout=120, headers=svc.headers()) as http:
                assert http.post("/v1/items", json={"items": ITEMS}).status_code == 200
                events = [
                    {"type": "view", "event_id": "e1", "user_id": "u", "occurred_at": T0,
                     "item_id": "m0"},
                    {"type": "review", "event_id": "e2", "user_id": "u",
                     "occurred_at": T0 + 1, "item_id": "m0", "text": "loved the space war",
                     "rating": 5},
                ]
                assert http.post("/v1/events", json={"events": events}).status_code == 200
                shard = ray.get_actor("portrait-shard-0", namespace=NAMESPACE)
                base = EncoderSettings().model_id
                assert ray.get(shard.text_model.remote("u"), timeout=60) == base

                assert main(["encoder", "register", str(tmp_path / "tuned")]) == 0
                statuses: list[int] = []
                done = threading.Event()

                def load() -> None:
                    with httpx.Client(base_url=svc.url, timeout=120,
                                      headers=svc.headers()) as client:
                        while not done.is_set():
                            resp = client.get("/v1/users/u/recommendations?k=3")
                            statuses.append(resp.status_code)

                loader = threading.Thread(target=load)
                loader.start()
                try:
                    assert main(["encoder", "switch", record.name]) == 0
                    deadline = time.monotonic() + 60
                    while time.monotonic() < deadline:
                        if ray.get(shard.text_model.remote("u"), timeout=60) == record.model_id:
                            break
                        time.sleep(0.5)
                finally:
                    done.set()
                    loader.join()
                assert statuses and set(statuses) == {200}, sorted(set(statuses))
                assert ray.get(shard.text_model.remote("u"), timeout=60) == record.model_id
                more = [{"type": "search", "event_id": "e3", "user_id": "u",
                         "occurred_at": T0 + 2, "query": "detective story"}]
                assert http.post("/v1/events", json={"events": more}).status_code == 200
                assert http.get("/v1/users/u/recommendations?k=3").status_code == 200

                assert main(["encoder", "rollback"]) == 0
                deadline = time.monotonic() + 60
                while ray.get(shard.text_model.remote("u"), timeout=60) != base:
                    assert time.monotonic() < deadline, "the shard never rolled back"
                    time.sleep(0.5)
        finally:
            svc.stop()
