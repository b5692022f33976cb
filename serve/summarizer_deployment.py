"""The summary model as its own Ray Serve deployment, ``PortraitSummarizer``, batched.

Each caller sends one chat; ``@serve.batch`` gathers the chats of concurrent callers into one
engine call (vLLM decodes a batch together, so eight summaries cost far less than eight
calls; README, "Summaries"). The engine is built, and every batch run, on one worker thread
(as for the encoder: the CPU engine binds its threads on the thread that built it), so the
replica's event loop keeps queueing chats while a batch runs. :func:`build_summarizer_app`
is the only place the deployment is bound; :class:`ServeSummarizer` is the ingress's client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ray import serve
from ray.serve import Application

from serve.encoder_deployment import not_cancelled
from serve.summarizer import Messages, SummarizerSettings, VllmSummarizer

DEPLOYMENT = "PortraitSummarizer"

EngineFactory = Callable[[SummarizerSettings, Path], VllmSummarizer]


def _vllm_engine(settings: SummarizerSettings, data_dir: Path) -> VllmSummarizer:
    return VllmSummarizer(settings, data_dir).start()


@serve.deployment(name=DEPLOYMENT)
class PortraitSummarizer:
    """One generate engine per replica, fed by a batcher."""

    def __init__(self, settings: SummarizerSettings, data_dir: str,
                 engine_factory: EngineFactory | None = None) -> None:
        factory = engine_factory or _vllm_engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summarizer")
        t0 = time.perf_counter()
        self._engine = self._executor.submit(factory, settings, Path(data_dir)).result()
        self._load_seconds = time.perf_counter() - t0
        self._batch_sizes: dict[int, int] = {}
        self._generate_batch.set_max_batch_size(settings.max_batch_size)  # type: ignore[attr-defined]
        self._generate_batch.set_batch_wait_timeout_s(  # type: ignore[attr-defined]
            settings.batch_wait_timeout_s)

    async def model_id(self) -> str:
        return self._engine.model_id

    async def generate(self, messages: Messages) -> str:
        text: str = await self._generate_batch(messages)
        return text

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.05)
    async def _generate_batch(self, chats: list[Messages]) -> list[str]:
        self._batch_sizes[len(chats)] = self._batch_sizes.get(len(chats), 0) + 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._engine.generate, chats)

    async def stats(self) -> dict[str, Any]:
        return {"load_seconds": self._load_seconds,
                "engine_load_seconds": self._engine.load_seconds,
                "convert_seconds": self._engine.convert_seconds,
                "batch_sizes": dict(self._batch_sizes)}


def build_summarizer_app(settings: SummarizerSettings, data_dir: Path) -> Application:
    """The deployment bound with its settings; ``data_dir`` holds the converted checkpoint."""
    app: Application = PortraitSummarizer.options(  # type: ignore[attr-defined]  # by @serve.deployment
        num_replicas=1,
        # Callers send one chat each: the batcher sees at most this many at once.
        max_ongoing_requests=max(64, settings.max_batch_size * 4),
        ray_actor_options={"num_cpus": settings.num_cpus},
        # Conversion on first use plus the engine's load: well past Serve's default.
        health_check_timeout_s=60,
    ).bind(settings, str(Path(data_dir).resolve()))
    return app


class ServeSummarizer:
    """The ingress's :class:`serve.summary_service.Summarizer`: the deployment's handle."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._model_id: str | None = None

    async def model_id(self) -> str:
        if self._model_id is None:
            self._model_id = str(await not_cancelled(self._handle.model_id.remote()))
        return self._model_id

    async def generate(self, messages: Messages) -> str:
        # A replica killed mid-call surfaces as a cancellation that is not ours.
        text: str = await not_cancelled(self._handle.generate.remote(messages))
        return text
