"""What checking API tokens costs per request.

Two in-process systems over the same memory store and the same catalog, one with tokens
checked (an admin token, cached as in the service) and one with ``PORTRAIT_AUTH=off``; the
same requests (``GET /v1/items/{id}``, a cheap route, and recommendations) alternate between
them in rounds, so machine noise hits both alike. Prints the mean per request for each and
the difference, which is the whole cost of the check (header parsing, the cache lookup, one
HMAC-SHA256 and FastAPI's dependency); target <= 0.2 ms. Also the check alone, outside HTTP,
and a third system with per-token rate limits on (set too high to refuse anything), whose
difference to the second is what the limiter adds to every request.

    ./dev bench auth [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def run(requests: int, rounds: int) -> int:
    from actors.text_features import ThreadedEncoder
    from serve.composition import in_process
    from serve.settings import Settings
    from serve.token_admin import create_token
    from tests.fakes import HashingEncoder

    key = b"bench key of at least thirty-two bytes!"
    url = "memory://bench-auth"
    encoder = ThreadedEncoder(HashingEncoder(dim=32))
    on = in_process(Settings(shards=1), url, encoder, secret_key=key)
    off = in_process(Settings(shards=1, auth=False), url, encoder)
    limited = in_process(Settings(shards=1, rate_limit_rps=1e9, rate_limit_events_per_s=1e9),
                         url, encoder, secret_key=key)
    token = await create_token(on.context.stores.tokens, key, "bench", ["admin"])
    headers = {"authorization": f"Bearer {token.text}"}
    items = [{"id": f"m{k}", "title": f"Film {k}", "description": "a film about things",
              "tags": ["Drama"]} for k in range(50)]
    clients = {
        "tokens checked": httpx.AsyncClient(transport=httpx.ASGITransport(app=on.app),
                                            base_url="http://p", headers=headers),
        "PORTRAIT_AUTH=off": httpx.AsyncClient(transport=httpx.ASGITransport(app=off.app),
                                               base_url="http://p"),
        "checked + rate limits": httpx.AsyncClient(
            transport=httpx.ASGITransport(app=limited.app), base_url="http://p",
            headers=headers),
    }
    first = clients["tokens checked"]
    assert (await first.post("/v1/items", json={"items": items})).status_code == 200
    events = [{"type": "view", "event_id": f"e{k}", "user_id": "u", "occurred_at": 1.7e9 + k,
               "item_id": f"m{k % 50}"} for k in range(20)]
    assert (await first.post("/v1/events", json={"events": events})).status_code == 200
    routes = {"GET /v1/items/{id}": "/v1/items/m7",
              "GET recommendations": "/v1/users/u/recommendations?k=10"}
    per: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for route, path in routes.items():
            for name, client in clients.items():
                assert (await client.get(path)).status_code == 200
                began = time.perf_counter()
                for _ in range(requests // rounds):
                    await client.get(path)
                per.setdefault((route, name), []).append(
                    (time.perf_counter() - began) / (requests // rounds))
    ok = True
    print(f"auth: {requests} requests per route and system, {rounds} alternating rounds "
          "(in process, ASGI transport)")
    for route in routes:
        checked = statistics.median(per[(route, "tokens checked")])
        plain = statistics.median(per[(route, "PORTRAIT_AUTH=off")])
        cost_ms = (checked - plain) * 1000
        ok &= cost_ms <= 0.2
        limits = statistics.median(per[(route, "checked + rate limits")])
        print(f"  {route:<22} checked {checked * 1000:.3f} ms, off {plain * 1000:.3f} ms: "
              f"the check costs {cost_ms:+.3f} ms ({checked / plain:.2f}x); with rate limits "
              f"{limits * 1000:.3f} ms ({(limits - checked) * 1000:+.3f} ms)")
    assert on.context.auth is not None
    n = 20_000
    began = time.perf_counter()
    for _ in range(n):
        await on.context.auth.check(headers["authorization"], "profiles:read")
    alone_us = (time.perf_counter() - began) / n * 1e6
    print(f"  the check alone (parse, cached lookup, HMAC): {alone_us:.1f} us")
    print("  target (<= 0.2 ms per request): " + ("met" if ok else "NOT met"))
    for client in clients.values():
        await client.aclose()
    await on.close()
    await off.close()
    await limited.close()
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    return asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    raise SystemExit(main())
