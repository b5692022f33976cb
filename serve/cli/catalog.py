"""``portrait import-catalog`` (encode and store a data set's items) and ``portrait
train-items`` (train the collaborative item space from the event log now)."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

from serve.cli.command import Subcommands
from serve.cli.database import database
from serve.settings import Settings


def cmd_import_catalog(args: argparse.Namespace, settings: Settings) -> int:
    """Encode and store a data set's catalog, with a progress bar; a re-run resumes (what is
    stored already is skipped). ``--vectors`` brings items' own vectors."""
    from actors.text_features import ThreadedEncoder
    from encoding.vllm_encoder import VllmEncoder
    from serve.catalog_import import import_items, load_vectors, summary
    from storage.datasets.registry import load_dataset
    from storage.migrate import upgrade
    from storage.stores import open_stores

    dataset = load_dataset(args.dataset, args.data_dir, settings.storage.datasets_dir)
    vectors = None
    if args.vectors is not None:  # checked whole before the encoder or the database start
        vectors = load_vectors(args.vectors, dataset.items, args.vector_model)
        print(f"{sum(v is not None for v in vectors)} items bring their own vectors "
              f"({args.vectors})", flush=True)
    with database(settings) as url:
        upgrade(url)
        t0 = time.perf_counter()
        engine = VllmEncoder(settings.encoder).start()
        print(f"encoder {engine.model_id} loaded in {time.perf_counter() - t0:.1f}s", flush=True)
        t1 = time.perf_counter()

        async def run() -> Any:
            stores = open_stores(url, pool_size=2)
            try:
                return await import_items(stores.catalog(ThreadedEncoder(engine)),
                                          dataset.items, vectors)
            finally:
                await stores.close()

        result = asyncio.run(run())
        print(summary(result, len(dataset.items), time.perf_counter() - t1))
    return 0


def cmd_train_items(args: argparse.Namespace, settings: Settings) -> int:
    """Train the collaborative item space, and the learned ranker with it, from the event log
    now and store them."""
    from tqdm import tqdm

    from actors.item_space_trainer import ItemSpaceTrainer
    from actors.ranker_trainer import CatalogRankerSources, RankerTrainer
    from portrait.item_space import CollabSettings
    from portrait.progress import on_bar
    from serve.composition import ranker_policy, store_factory
    from storage.migrate import upgrade

    collab = settings.experiments.collab_settings() or CollabSettings()
    policy = ranker_policy(settings)
    with database(settings) as url:
        upgrade(url)

        async def run() -> int:
            stores = await dataclasses.replace(store_factory(settings, url), pool_size=2).open()
            ranker = None
            if policy is not None:  # the encoder names the catalog's vectors, encodes what
                # text features the cache lacks: started here only when a ranker trains
                ranker = RankerTrainer(policy, CatalogRankerSources(
                    stores, stores.text_features, _StartedOnUse(settings)))
            trainer = ItemSpaceTrainer(stores.events, stores.item_spaces, collab,
                                       ranker=ranker)
            await trainer.load_latest()
            started = time.perf_counter()
            with tqdm(unit="block", desc="co-occurrence", file=sys.stdout) as bar:
                try:
                    space = await trainer.retrain(on_bar(bar))
                finally:
                    await stores.close()
            stats = trainer.stats
            if space is None:
                print(f"portrait train-items: no new item space: {stats.last_error}",
                      file=sys.stderr)
                return 1
            print(f"item space {space.version}: {len(space.item_ids)} items x "
                  f"{space.vectors.shape[1]} dims from {space.events} events in "
                  f"{time.perf_counter() - started:.1f}s (a running service publishes it within "
                  "PORTRAIT_CATALOG_REFRESH_S)")
            print(ranker_line(stats.ranker_trained, stats.ranker_skipped_reason,
                              stats.ranker_metrics, enabled=policy is not None))
            return 0

        return asyncio.run(run())


def ranker_line(trained: bool, reason: str | None, metrics: dict[str, float], *,
                enabled: bool) -> str:
    """What ``train-items`` says of the learned ranker: its figures, or why there is none."""
    if not enabled:
        return "learned ranker: off (PORTRAIT_RANKER_ENABLED); the blend serves"
    if trained:
        return (f"learned ranker: trained on {int(metrics.get('groups', 0))} users' next items, "
                f"validation NDCG@10 {metrics.get('validation_ndcg10', float('nan')):.4f} "
                f"after {int(metrics.get('rounds', 0))} rounds")
    return f"learned ranker: not trained ({reason}); the blend serves"


class _StartedOnUse:
    """The encoder in this process, started on first use (an :class:`EncoderConnector`)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._encoder: Any = None

    async def connect(self) -> Any:
        if self._encoder is None:
            from actors.text_features import ThreadedEncoder
            from encoding.vllm_encoder import VllmEncoder

            engine = await asyncio.to_thread(VllmEncoder(self._settings.encoder).start)
            self._encoder = ThreadedEncoder(engine)
        return self._encoder


def register(sub: Subcommands) -> None:
    """``import-catalog`` and ``train-items``."""
    imp = sub.add_parser("import-catalog", help="encode and store a dataset's items")
    imp.add_argument("--dataset", default="movielens")
    imp.add_argument("--data-dir", type=Path, default=None)
    imp.add_argument("--vectors", type=Path, default=None, metavar="FILE.npz",
                     help="items' own vectors: an .npz with 'ids' and 'vectors' (one row "
                          "each) and optionally 'model'; those items are not encoded")
    imp.add_argument("--vector-model", default=None, metavar="MODEL_ID",
                     help="the model that made --vectors (the encoder's model id)")
    imp.set_defaults(handler=cmd_import_catalog)
    sub.add_parser("train-items", help="train the collaborative item space from the event log"
                   ).set_defaults(handler=cmd_train_items)


__all__ = ["cmd_import_catalog", "cmd_train_items", "register"]
