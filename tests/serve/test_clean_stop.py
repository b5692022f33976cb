"""A clean stop of Serve and Ray prints no actor-death reports.

Measured before: every clean Ctrl-C of ``./dev run`` ended with ``(raylet) Task
ServeController... The actor is dead because it was killed by ray.kill`` lines (the Serve
controller's ``graceful_shutdown`` kills the controller itself, and the driver prints every
error its job reports), which read like a crash. A real Ray and Serve in a child process,
stopped by :func:`serve.service.stop_ray`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.live_server import free_port

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import sys, time, urllib.request
    import ray
    from ray import serve
    from serve.service import stop_ray

    @serve.deployment
    class Hello:
        async def __call__(self, request):
            return "hi"

    port = int(sys.argv[1])
    ray.init(namespace="portrait-stop-test", include_dashboard=False,
             _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Hello.bind(), name="hello", route_prefix="/", blocking=False)
    for _ in range(240):
        try:
            print(urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read().decode(),
                  flush=True)
            break
        except OSError:
            time.sleep(0.5)
    stop_ray(None)
    print("stopped", flush=True)
""")


def test_stopping_serve_and_ray_reports_no_killed_actor() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(free_port())], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"})
    printed = done.stdout + done.stderr
    assert done.returncode == 0 and "hi\n" in done.stdout and "stopped" in done.stdout, printed
    assert "killed by" not in printed and "(raylet)" not in printed, printed
