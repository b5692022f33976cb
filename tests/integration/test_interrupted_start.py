"""Ctrl-C during start-up stops cleanly: one line, no traceback, the clean-up run.

Measured before: Ctrl-C during the first run's catalog import printed a KeyboardInterrupt
traceback from ``serve/service.py`` (``_import_demo_catalog``). A real process gets a real
SIGINT while that import waits on a service that never answers.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import contextlib, socket, sys, time
    from serve.service import _import_demo_catalog, interruptible

    server = socket.socket()  # takes the connection, never answers
    server.bind(("127.0.0.1", 0))
    server.listen()

    @contextlib.contextmanager
    def database():
        try:
            yield
        finally:
            print("cleaning up", flush=True)
            time.sleep(1.0)  # a second Ctrl-C lands here
            print("database stopped", flush=True)

    def start():
        with database():
            _import_demo_catalog(f"http://127.0.0.1:{server.getsockname()[1]}", 50, {})
        return 0

    sys.exit(interruptible(start))
""")


def _wait_for(proc: subprocess.Popen[str], text: str, out: list[str]) -> None:
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.append(line)
        if text in line:
            return
    raise AssertionError(f"never printed {text!r}: {''.join(out)}")


def test_ctrl_c_during_the_catalog_import_stops_with_one_line() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: list[str] = []
    try:
        _wait_for(proc, "catalog is empty", out)
        time.sleep(0.5)  # inside the request now
        proc.send_signal(signal.SIGINT)
        _wait_for(proc, "cleaning up", out)
        proc.send_signal(signal.SIGINT)  # impatient: Ctrl-C again during the clean-up
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    printed = "".join(out) + rest
    assert proc.returncode == 130, (printed, err)
    assert "Traceback" not in err and "KeyboardInterrupt" not in printed + err, err
    assert [line for line in printed.splitlines() if "interrupted" in line] == [
        "interrupted during start-up: stopped"], printed
    assert "database stopped" in printed  # the clean-up ran to its end
