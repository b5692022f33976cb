"""Switching the text encoder: how long the migration and the switch of a catalog and a log of
cached texts take.

    ./dev bench encoder_switch [--texts 100000] [--items N]

The MovieLens catalog (or its first ``--items``) is imported with the base MiniLM, ``--texts``
synthetic reviews are appended to the in-memory log, and :class:`actors.encoder_switch.
EncoderSwitch` switches to a second real encoder (MiniLM with slightly perturbed weights,
checked and loaded from its folder like a fine-tuned version), both engines on vLLM in this
process. Printed: the switch's seconds, items/s and texts/s re-encoded (a text is encoded with
its keyword phrases, as the shards encode it), and the rollback's seconds (nothing to encode).
Target: MovieLens and 100k cached texts in 10 minutes.

Not measured here: recommendation latency during the switch under `./dev bench http` load
(tests/serve/test_encoder_switch_live.py checks that no request fails during one).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.encoder_switch import EncoderSwitch  # noqa: E402
from encoding.encoder_checkpoint import read_record  # noqa: E402
from portrait.encoder_versions import EncoderVersion  # noqa: E402
from portrait.events import ReviewWritten  # noqa: E402
from serve.cli.encoders import LocalVersionedEncoder  # noqa: E402
from serve.settings import Settings  # noqa: E402
from storage.datasets.registry import load_dataset  # noqa: E402
from storage.stores import forget_memory, open_stores  # noqa: E402
from tests.encoder_folders import perturbed_minilm  # noqa: E402

WORDS = ("space", "detective", "love", "paris", "heist", "robot", "war", "comedy", "slow",
         "brilliant", "boring", "ending", "cast", "music", "twist", "family", "dark", "funny")


def review_text(n: int) -> str:
    """A short review, distinct per n (so nothing is cached twice)."""
    picks = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(6)]
    return f"review {n}: the {picks[0]} {picks[1]} was {picks[2]}, {picks[3]} and {picks[4]}"


async def run(texts: int, items: int | None, folder: Path) -> None:
    settings = Settings()
    url = "memory://bench-encoder-switch"
    stores = open_stores(url)
    encoder = LocalVersionedEncoder(settings)
    try:
        records = load_dataset("movielens").items
        records = records[:items] if items else records
        t0 = time.perf_counter()
        await stores.catalog(encoder).upsert(records)
        print(f"{len(records)} items imported with the base in {time.perf_counter() - t0:.1f}s")
        for start in range(0, texts, 1000):
            batch = [ReviewWritten(f"r{n}", f"user{n % 5000}", 1e9 + n, records[n % len(
                records)].item_id, text=review_text(n)) for n in range(start, min(texts,
                                                                               start + 1000))]
            by_user: dict[str, list[ReviewWritten]] = {}
            for e in batch:
                by_user.setdefault(e.user_id, []).append(e)
            for user, evs in by_user.items():
                await stores.events.append(user, evs)
        record = read_record(folder)
        target = await stores.encoder_versions.register(EncoderVersion(
            0, record.name, record.model_id, record.base_model, record.base_name, str(folder),
            record.dim, record=record.to_dict()))
        switch = EncoderSwitch(stores, encoder, stores.catalog(encoder).base_encoder())
        await encoder.encode_for(target, ["warm-up"])  # the engine's load is not the switch's
        t1 = time.perf_counter()
        await switch.switch(target)
        took = time.perf_counter() - t1
        s = switch.status
        texts_s = s.seconds - s.items_seconds
        print(f"switch: {took:.1f}s; {s.items_encoded} items in {s.items_seconds:.1f}s "
              f"({s.items_encoded / s.items_seconds:.0f}/s), {s.texts_encoded} texts in "
              f"{texts_s:.1f}s ({s.texts_encoded / texts_s:.0f}/s), the transaction "
              f"{took - s.seconds:.1f}s; target 600 s")
    finally:
        await stores.close()
        forget_memory(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tuned"
        perturbed_minilm(folder)
        asyncio.run(run(args.texts, args.items, folder))


if __name__ == "__main__":
    main()
