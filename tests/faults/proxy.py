"""A TCP proxy on loopback in front of a Postgres unix socket that injects network faults:
drop every connection, stall all traffic, and follow the server across a restart (point
``socket_path`` at the new socket). Used by the faults test tier and ``./dev bench faults``.
"""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy.engine import make_url


class FaultProxy:
    """TCP on 127.0.0.1 -> the server's unix socket, with faults on demand."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._open: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()

    def drop_all(self) -> None:
        """What a crash or a network cut does: every open connection ends now."""
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_unix_connection(self.socket_path)
        except OSError:
            client_w.transport.abort()
            return
        self._open |= {client_w, server_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    await self._flowing.wait()
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        self._open -= {client_w, server_w}


def socket_path(url: str) -> str:
    query = make_url(url).query
    return f"{query['host']}/.s.PGSQL.{query['port']}"


def proxied_url(direct: str, port: int) -> str:
    """The TCP URL through a proxy on ``port`` for the embedded server at ``direct``."""
    parsed = make_url(direct)
    return f"postgresql://{parsed.username}@127.0.0.1:{port}/{parsed.database}"
