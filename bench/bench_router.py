"""Shards as Ray actors behind the ingress, or as a Serve deployment the proxy routes to by
user: what each costs per request, against a trivial Serve route in the same run.

Issue 12 asks whether a user-affinity request router (Ray Serve's custom request routers)
would remove the ingress -> shard hop that dominates recommendation latency. This measures
the routing alone, with the same tiny amount of work at the end of every path (a dict lookup
of a user's ten item ids), so that the differences are the hops:

* ``trivial``: HTTP -> proxy -> one FastAPI replica that answers (the baseline);
* ``actor hop``: HTTP -> proxy -> ingress replica -> Ray actor call to a shard that holds
  the user (what Portrait does today);
* ``handle hop``: HTTP -> proxy -> ingress replica -> Serve handle call to a shard
  deployment whose router pins each user to one replica (Serve in charge of the shards,
  the hop kept);
* ``direct``: HTTP -> proxy -> the shard replica that holds the user: the shards are the
  HTTP deployment, and a custom router reads the user id from the request path and picks
  the replica by rendezvous hashing (no second hop).

Every path is checked to serve a user from one replica only (the single-writer property a
shard needs); requests go round-robin over the paths in rounds, so noise hits all alike.

    ./dev bench router [--requests 2000] [--users 500]
"""

from __future__ import annotations

import argparse
import os
import pickle
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PORT = 8793
SHARDS = 2
ITEMS = list(range(10))


# The routers live at the top of this module: Serve imports them by path (here __main__)
# and ships them by value to the proxy and the ingress replicas.


def owner(user_id: str, replicas: list[Any]) -> Any:
    """The replica that owns ``user_id``: Portrait's rendezvous hashing over replica ids."""
    from portrait.routing import owner as rendezvous_owner

    by_id = {r.replica_id.unique_id: r for r in replicas}
    return by_id[rendezvous_owner(user_id, sorted(by_id))]


class UserFromPathRouter(RequestRouter):
    """Picks the replica that owns the user named in an HTTP path ``.../users/{id}/...``."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is None or not candidate_replicas:
            return [candidate_replicas]
        # The proxy sends the ASGI scope pickled as the only argument.
        path = pickle.loads(pending_request.args[0]).asgi_scope["path"]
        parts = path.split("/")
        user = parts[parts.index("users") + 1] if "users" in parts else path
        return [[owner(user, candidate_replicas)]]


class UserArgRouter(RequestRouter):
    """Picks the replica that owns the user given as the call's first argument."""

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        if pending_request is None or not candidate_replicas:
            return [candidate_replicas]
        return [[owner(str(pending_request.args[0]), candidate_replicas)]]


class UserTable:
    """What every shard path ends in: the shard's users and their ten item ids."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.users: dict[str, list[int]] = {}

    async def recs(self, user_id: str) -> dict[str, Any]:
        items = self.users.setdefault(user_id, ITEMS)
        return {"user": user_id, "items": items, "replica": self.name}


def build_apps() -> dict[str, Any]:
    from fastapi import FastAPI
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    no_cpu = {"num_cpus": 0}

    trivial_api = FastAPI()

    @serve.deployment(ray_actor_options=no_cpu, max_ongoing_requests=256)
    @serve.ingress(trivial_api)
    class Trivial:
        @trivial_api.get("/users/{user_id}/recommendations")
        async def recs(self, user_id: str) -> dict[str, Any]:
            return {"user": user_id, "items": ITEMS, "replica": "trivial"}

    import ray

    ActorShard = ray.remote(num_cpus=0)(UserTable)

    actor_api = FastAPI()

    @serve.deployment(ray_actor_options=no_cpu, max_ongoing_requests=256)
    @serve.ingress(actor_api)
    class ActorIngress:
        def __init__(self) -> None:
            self.shards = {f"actor-{k}": ActorShard.remote(f"actor-{k}") for k in range(SHARDS)}

        @actor_api.get("/users/{user_id}/recommendations")
        async def recs(self, user_id: str) -> dict[str, Any]:
            from portrait.routing import owner as rendezvous_owner

            return await self.shards[rendezvous_owner(user_id, sorted(self.shards))].recs.remote(
                user_id)

    @serve.deployment(ray_actor_options=no_cpu, num_replicas=SHARDS, max_ongoing_requests=256,
                      request_router_config=RequestRouterConfig(
                          request_router_class=UserArgRouter))
    class HandleShard(UserTable):
        def __init__(self) -> None:
            super().__init__(f"handle-{os.getpid()}")

    handle_api = FastAPI()

    @serve.deployment(ray_actor_options=no_cpu, max_ongoing_requests=256)
    @serve.ingress(handle_api)
    class HandleIngress:
        def __init__(self, shards: Any) -> None:
            self.shards = shards

        @handle_api.get("/users/{user_id}/recommendations")
        async def recs(self, user_id: str) -> dict[str, Any]:
            return await self.shards.recs.remote(user_id)

    direct_api = FastAPI()

    @serve.deployment(ray_actor_options=no_cpu, num_replicas=SHARDS, max_ongoing_requests=256,
                      request_router_config=RequestRouterConfig(
                          request_router_class=UserFromPathRouter))
    @serve.ingress(direct_api)
    class DirectShard:
        def __init__(self) -> None:
            self.table = UserTable(f"direct-{os.getpid()}")

        @direct_api.get("/users/{user_id}/recommendations")
        async def recs(self, user_id: str) -> dict[str, Any]:
            return await self.table.recs(user_id)

    apps = {
        "trivial": Trivial.bind(),
        "actor hop": ActorIngress.bind(),
        "handle hop": HandleIngress.bind(HandleShard.bind()),
        "direct": DirectShard.bind(),
    }
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1":
        # HAProxy balances ingress traffic itself: Serve refuses a custom ingress router.
        print("RAY_SERVE_ENABLE_HA_PROXY=1: the direct path cannot run (no custom router on "
              "an HAProxy-fronted ingress)")
        del apps["direct"]
    return apps


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per path")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--round", type=int, default=100, help="requests per path per round")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # The service's Serve mode (serve/__init__.py) unless the caller sets another.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")

    import ray
    from ray import serve

    root = str(Path(__file__).resolve().parent.parent)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": root}})
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": PORT})
        apps = build_apps()
        prefixes = {name: "/" + name.replace(" ", "-") for name in apps}
        for name, app in apps.items():
            serve.run(app, name=name.replace(" ", "-"), route_prefix=prefixes[name])
        samples: dict[str, list[float]] = {name: [] for name in apps}
        served_by: dict[str, dict[str, set[str]]] = {name: {} for name in apps}
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as http:
            for name in apps:  # warm every path and replica
                for u in range(50):
                    http.get(f"{prefixes[name]}/users/w{u}/recommendations").raise_for_status()
            i = 0
            while i < args.requests:
                for name in apps:
                    for j in range(args.round):
                        user = f"u{(i + j) * 7919 % args.users}"
                        began = time.perf_counter()
                        resp = http.get(f"{prefixes[name]}/users/{user}/recommendations")
                        samples[name].append((time.perf_counter() - began) * 1000)
                        resp.raise_for_status()
                        served_by[name].setdefault(user, set()).add(resp.json()["replica"])
                i += args.round
    finally:
        serve.shutdown()
        ray.shutdown()

    base = statistics.median(samples["trivial"])
    mode = os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"]
    print(f"\n{args.requests} sequential GETs per path over HTTP on 127.0.0.1, "
          f"{args.users} users, {SHARDS} shards, RAY_SERVE_THROUGHPUT_OPTIMIZED={mode}\n")
    print(f"{'path':12} {'p50 ms':>8} {'p99 ms':>8} {'p50 / trivial':>14} "
          f"{'replicas per user':>18} {'replicas used':>14}")
    for name, xs in samples.items():
        spread = max(len(s) for s in served_by[name].values())
        used = len(set().union(*served_by[name].values()))
        print(f"{name:12} {statistics.median(xs):8.2f} {pct(xs, 99):8.2f} "
              f"{statistics.median(xs) / base:14.2f} {spread:18d} {used:14d}")
    pinned = all(len(s) == 1 for name in ("actor hop", "handle hop", "direct")
                 if name in served_by for s in served_by[name].values())
    print("\nevery user served by one replica on the shard paths:", pinned)
    return 0 if pinned else 1


if __name__ == "__main__":
    sys.exit(main())
