"""Encoder autoscaling, observed: replicas under a text-heavy load and after it.

Starts the Ray system on a throw-away embedded Postgres with the encoder autoscaled between
1 and ``--max-replicas`` (``PORTRAIT_ENCODER_MAX_REPLICAS``, a low
``PORTRAIT_ENCODER_TARGET_ONGOING_REQUESTS`` so that this machine can reach it, a short
downscale delay), sends search events with distinct texts (each one is encoded) from W
writers for ``--load-s`` seconds, then idles. Every second it prints the encoder's running
replica count (from Serve's status) and the texts encoded so far; at the end, when the
second replica started and stopped, and the encode rate with one and with two replicas.

    .venv/bin/python bench/bench_encoder_autoscale.py [--load-s 90] [--idle-s 60]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serve.service import RunningService, start_service  # noqa: E402
from storage.encryption import MASTER_KEY_ENV, new_master_key_text  # noqa: E402

WORDS = ("space opera galaxy rebels empire starship pilot desert planet robot android "
         "detective noir city rain murder heist kitchen chef love paris war soldier ocean "
         "island pirate dragon wizard school music band road trip family comedy").split()


def replicas(app: str, deployment: str) -> int:
    from ray import serve

    status = serve.status().applications[app].deployments[deployment]
    return int(status.replica_states.get("RUNNING", 0))


def texts_in_flight(svc: RunningService) -> float:
    """The signal the autoscaling policy sizes by, as /metrics shows it (one replica's)."""
    text = httpx.get(f"{svc.url}/metrics", headers=svc.headers(), timeout=30).text
    for line in text.splitlines():
        if line.startswith("portrait_encoder_texts_in_flight "):
            return float(line.split()[1])
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--target", type=int, default=4, help="texts in flight per replica")
    parser.add_argument("--writers", type=int, default=12)
    parser.add_argument("--load-s", type=float, default=90.0)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=8797)
    args = parser.parse_args()
    os.environ.setdefault(MASTER_KEY_ENV, new_master_key_text())
    os.environ["PORTRAIT_ENCODER_MAX_REPLICAS"] = str(args.max_replicas)
    os.environ["PORTRAIT_ENCODER_TARGET_ONGOING_REQUESTS"] = str(args.target)
    os.environ["PORTRAIT_ENCODER_DOWNSCALE_DELAY_S"] = "15"
    # Two replicas of one CPU do not fit this machine's 2-CPU Ray node beside the ingress
    # and the shards: Serve then adds a replica that waits for resources (on Kubernetes the
    # Ray autoscaler would add a pod for it). Half a CPU each lets the second one start.
    os.environ.setdefault("PORTRAIT_ENCODER_NUM_CPUS", "0.5")

    from serve.composition import APP_NAME, ENCODER_DEPLOYMENT
    from serve.settings import Settings, load_settings
    from storage.embedded import EmbeddedPostgres

    base = Path(tempfile.mkdtemp(prefix="portrait-bench-autoscale-"))
    pg = EmbeddedPostgres(base / "pg")
    url = pg.start()
    settings = Settings(data_dir=base, port=args.port, shards=2,
                        encoder=load_settings().encoder)
    svc = start_service(settings, url, load_demo_catalog=False)
    stop = threading.Event()
    encoded = [0]

    def writer(k: int) -> None:
        i = 0
        with httpx.Client(base_url=svc.url, timeout=120, headers=svc.headers()) as http:
            while not stop.is_set():
                words = [WORDS[(k * 7 + i * 3 + j * 11) % len(WORDS)] for j in range(6)]
                event = {"type": "search", "event_id": f"w{k}-{i}", "user_id": f"u{k}-{i % 50}",
                         "occurred_at": 1_700_000_000 + i, "query": " ".join(words) + f" {k}.{i}"}
                if http.post("/v1/events", json={"events": [event]}).status_code == 200:
                    encoded[0] += 1
                i += 1

    timeline: list[tuple[float, int, int]] = []
    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(k,), daemon=True)
               for k in range(args.writers)]
    try:
        for t in threads:
            t.start()
        while (now := time.monotonic() - started) < args.load_s + args.idle_s:
            if now >= args.load_s and not stop.is_set():
                stop.set()
                print(f"{now:6.0f} s  load stops")
            n = replicas(APP_NAME, ENCODER_DEPLOYMENT)
            timeline.append((now, n, encoded[0]))
            held = texts_in_flight(svc)
            print(f"{now:6.0f} s  encoder replicas running {n}  texts encoded {encoded[0]:,}"
                  f"  texts held by the replica asked {held:.0f}", flush=True)
            time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        svc.stop()
        pg.stop()
        shutil.rmtree(base, ignore_errors=True)

    up = next((t for t, n, _ in timeline if n >= 2), None)
    down = next((t for t, n, _ in timeline if up is not None and t > up and n == 1), None)

    def rate(count: int) -> float:
        rows = [(t, e) for t, n, e in timeline if n == count and t < args.load_s]
        return (rows[-1][1] - rows[0][1]) / (rows[-1][0] - rows[0][0]) if len(rows) > 2 else 0.0

    print(f"\nsecond replica running at {up} s; back to one at {down} s (load stopped at "
          f"{args.load_s:.0f} s); texts/s with 1 replica {rate(1):.1f}, with 2 {rate(2):.1f}")
    return 0 if up is not None and down is not None else 1


if __name__ == "__main__":
    sys.exit(main())
