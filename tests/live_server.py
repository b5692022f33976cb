"""An in-process system served by uvicorn on loopback, for tests that need real HTTP (the
fuzzer, CLI commands that call the API)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from serve.composition import InProcessSystem
from tests import auth


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(system: InProcessSystem) -> Iterator[tuple[str, dict[str, str]]]:
    """``(base URL, admin headers)`` while ``system`` serves on 127.0.0.1; closed after."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(system.app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    headers: dict[str, str] = {}

    def serve() -> None:  # one loop for the app's whole life: its stores are bound to it
        loop = asyncio.new_event_loop()
        headers.update(loop.run_until_complete(auth.headers(system)))
        loop.run_until_complete(server.serve())
        loop.run_until_complete(system.close())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    try:
        yield base, headers
    finally:
        server.should_exit = True
        thread.join(timeout=30)
