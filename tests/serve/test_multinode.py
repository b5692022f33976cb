"""Past one node: the service on a head and two worker Ray nodes on this machine, shards spread
across them, and a worker node killed under write load.

The nodes are started with ``ray start`` (each on 127.0.0.1 with its own raylet, object store
and ports). Serve's HTTP proxy runs on the head only (the nodes share this machine's ports).
Writers use the Python client, which retries 503s with the same event ids.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import time
from typing import Any

import httpx
import pytest
import ray

from encoding.settings import EncoderSettings
from portrait.tuned_config import TunedConfig
from portrait_client import Client, PortraitError, event
from serve import local_cluster
from serve.service import start_service
from serve.settings import Settings
from storage.datasets.movielens import load_movielens
from tests.conftest import run_blocking, scratch_database
from tests.database_reads import recorded_events
from tests.live_server import free_port
from tests.replay_check import assert_same_json, drop_snapshots

T0 = 1_700_000_000
SHARDS = 4


def shard_nodes() -> dict[str, str]:
    """Shard name -> the node its (live) actor runs on."""
    from ray._private.state import actors

    return {a["Name"]: a["Address"]["NodeID"] for a in actors().values()
            if a["Name"].startswith("portrait-shard-") and a["State"] == "ALIVE"}


@pytest.fixture(scope="module")
def cluster(embedded_pg, tmp_path_factory):
    # A throw-away cluster: no Ray token (as tests/serve's encoder test does).
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    try:
        address = local_cluster.up(workers=2, head_cpus=2, worker_cpus=1)
        ray.init(address=address, namespace="portrait", log_to_driver=False)
        plain = tmp_path_factory.mktemp("config") / "plain.json"
        plain.write_text(json.dumps(TunedConfig().to_document()))
        with scratch_database(embedded_pg.url) as url:
            settings = Settings(
                data_dir=tmp_path_factory.mktemp("data"), port=free_port(), shards=SHARDS,
                ray_address=address,  # as `portrait run` on a joined cluster: stop() cleans up
                snapshot_every=5, proxy_location="HeadOnly", profile_config=plain,
                encoder=EncoderSettings(dtype="float32", num_cpus=1),
            )
            svc = start_service(settings, url, load_demo_catalog=False)
            try:
                items = load_movielens().items[:40]
                body = {"items": [{"id": i.item_id, "title": i.title,
                                   "description": i.description, "tags": list(i.tags)}
                                  for i in items]}
                assert httpx.post(f"{svc.url}/v1/items", json=body, timeout=300,
                                  headers=svc.headers()).status_code == 200
                yield svc
            finally:
                svc.stop()  # disconnects this driver
    finally:
        local_cluster.down()  # every node; also forgets the cluster's address
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def test_shards_spread_and_survive_a_worker_node_loss(cluster: Any) -> None:
    svc = cluster
    nodes = {n["NodeManagerPort"]: n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 3, nodes
    placed = shard_nodes()
    assert len(placed) == SHARDS and len(set(placed.values())) >= 2, placed
    doomed_k = next(k for k in range(2) if nodes[6400 + 20 * k] in set(placed.values()))
    doomed = nodes[6400 + 20 * doomed_k]
    moved = sorted(s for s, n in placed.items() if n == doomed)

    users = [f"node-user-{u}" for u in range(8)]  # spread over every shard
    acked: dict[str, set[str]] = {u: set() for u in users}

    def writer(user: str) -> None:
        with Client(svc.url, token=svc.token, max_retries=40) as portrait:
            for b in range(12):
                batch = [event("view", user, occurred_at=T0 + 10 * b + j,
                               event_id=f"{user}-{b}-{j}", item_id=str(1 + (b + j) % 30))
                         for j in range(4)]
                for attempt in range(20):
                    try:
                        results = portrait.post_events(batch)
                        break
                    except PortraitError as exc:
                        # Serve's own proxy answers a bare, non-JSON 500 for a request whose
                        # ingress replica died with the node (bench/bench_faults.py counts
                        # them apart); the same event ids are safe to send again. Ours
                        # are JSON and are never retried here.
                        if exc.status != 500 or exc.error != "HTTPError" or attempt == 19:
                            raise
                        time.sleep(0.5)
                for r in results:
                    assert "error" not in r, r
                    acked[user].add(r["event_id"])
                time.sleep(0.1)

    with cf.ThreadPoolExecutor(len(users)) as pool:
        futures = [pool.submit(writer, u) for u in users]
        time.sleep(1.0)
        assert not any(f.done() for f in futures), "the node must die mid-stream"
        local_cluster.kill_worker(doomed_k)
        for f in futures:
            f.result()

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # the GCS notices the node's death, actors restart
        after = shard_nodes()
        if len(after) == SHARDS and doomed not in after.values():
            break
        time.sleep(1)
    assert len(after) == SHARDS and doomed not in after.values(), after
    assert {after[s] for s in moved} <= set(nodes.values()) - {doomed}
    with httpx.Client(base_url=svc.url, headers=svc.headers(), timeout=120) as http:
        live = {u: http.get(f"/v1/users/{u}/profile", params={"top": 50}).json()
                for u in users}
    for user in users:
        recorded = run_blocking(lambda u=user: recorded_events(svc.database_url, u))
        ids = [r.event.event_id for r in recorded]
        assert len(ids) == len(set(ids)) == 48 and set(ids) == acked[user], user
        assert [r.seq for r in recorded] == list(range(1, 49))
        assert live[user]["event_count"] == 48

    # Every profile equals a fresh replay of its log: no snapshots, every shard restarted.
    run_blocking(lambda: drop_snapshots(svc.database_url))
    for name in after:
        ray.kill(ray.get_actor(name, namespace="portrait"), no_restart=False)
    with httpx.Client(base_url=svc.url, headers=svc.headers(), timeout=120) as http:
        for user in users:
            for _ in range(120):
                replayed = http.get(f"/v1/users/{user}/profile", params={"top": 50})
                if replayed.status_code == 200:
                    break
                time.sleep(0.5)
            assert_same_json(replayed.json(), live[user], user)
