"""``GET /v1/users/{id}/summary``'s logic: facts, cache, model or template, the check.

:class:`SummaryService` lives in the ingress process. It asks a :class:`Summarizer` (the
``PortraitSummarizer`` Serve deployment through its handle, or the engine in this process)
for a text, checks it (:func:`portrait.summaries.check_summary`) and answers the template
instead when the model is off, unavailable, too slow, or wrote something unfit. Answers are
cached in memory, per process, in a bounded LRU keyed by (user, last_seq, model id): a new
event changes ``last_seq``, so a cached summary is never stale, and nothing needs evicting
on writes. Each ingress replica has its own cache; nothing is persisted.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from portrait.summaries import (
    SummaryFacts,
    build_messages,
    check_summary,
    facts_from_profile,
    template_summary,
    tidy,
)
from serve import metrics
from serve.summarizer import Messages, VllmSummarizer

TEMPLATE_MODEL = "template"


class Summarizer(Protocol):
    """Writes one text for one chat (batched behind the scenes where it can be)."""

    async def model_id(self) -> str: ...
    async def generate(self, messages: Messages) -> str: ...


class LocalSummarizer:
    """The engine in this process (the in-process system, tests, the bench): started lazily
    on its own worker thread, which then runs every generation (the CPU engine binds its
    threads on the thread that built it)."""

    def __init__(self, engine: VllmSummarizer) -> None:
        self._engine = engine
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="summarizer")

    async def model_id(self) -> str:
        return self._engine.model_id

    async def generate(self, messages: Messages) -> str:
        loop = asyncio.get_running_loop()

        def run() -> str:
            self._engine.start()
            return self._engine.generate([messages])[0]

        return await loop.run_in_executor(self._executor, run)

    def close(self) -> None:
        self._engine.close()
        self._executor.shutdown(wait=False)


class SummaryService:
    """Cached summaries of profiles, from the model when it is there and fit."""

    def __init__(self, summarizer: Summarizer | None, *, cache_size: int = 10_000,
                 timeout_s: float = 60.0) -> None:
        self._summarizer = summarizer
        self._cache: OrderedDict[tuple[str, int, str], dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self._timeout_s = timeout_s
        # Concurrent requests for the same summary share one generation.
        self._inflight: dict[tuple[str, int, str], asyncio.Future[dict[str, Any]]] = {}

    @property
    def enabled(self) -> bool:
        return self._summarizer is not None

    async def summary(self, user_id: str, profile: Mapping[str, Any],
                      titles: Mapping[str, str], catalog_tags: Iterable[str] = ()
                      ) -> dict[str, Any]:
        """The answer for one profile summary (``portrait.inspection.summarize``'s dict);
        ``user_id`` is the id the cache knows the user by (the stored one)."""
        facts = facts_from_profile(profile, titles)
        answer = await self._cached(user_id, facts, list(catalog_tags))
        metrics.SUMMARIES.labels(source=answer["source"]).inc()
        return answer

    async def _cached(self, user_id: str, facts: SummaryFacts,
                      catalog_tags: list[str]) -> dict[str, Any]:
        if self._summarizer is None:  # the template is cheaper than a cache lookup
            return self._answer(facts, "disabled")
        try:
            model = await asyncio.wait_for(self._summarizer.model_id(), self._timeout_s)
        except Exception:  # the deployment is not reachable: the template, not cached
            metrics.SUMMARY_FALLBACKS.labels(reason="unavailable").inc()
            return self._answer(facts, "unavailable")
        key = (user_id, facts.last_seq, model)
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return {**hit, "cached": True}
        pending = self._inflight.get(key)
        if pending is not None:
            return {**await asyncio.shield(pending), "cached": True}
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer, keep = await self._write(self._summarizer, facts, model, catalog_tags)
            if keep and self._cache_size > 0:
                self._cache[key] = answer
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            future.set_result(answer)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        finally:
            del self._inflight[key]
        return answer

    async def _write(self, summarizer: Summarizer, facts: SummaryFacts, model: str,
                     catalog_tags: list[str]) -> tuple[dict[str, Any], bool]:
        """The answer and whether to cache it (a failure of the model's is not cached: the
        next request tries again)."""
        started = time.perf_counter()
        try:
            raw = await asyncio.wait_for(summarizer.generate(build_messages(facts)),
                                         self._timeout_s)
        except TimeoutError:
            metrics.SUMMARY_FALLBACKS.labels(reason="timeout").inc()
            return self._answer(facts, "timeout"), False
        except Exception:  # a dead replica, a failed load: the template this time
            metrics.SUMMARY_FALLBACKS.labels(reason="unavailable").inc()
            return self._answer(facts, "unavailable"), False
        metrics.SUMMARY_LATENCY.observe(time.perf_counter() - started)
        text = tidy(raw)
        verdict = check_summary(text, facts, catalog_tags)
        if not verdict.ok:
            # Greedy decoding writes the same text again for the same facts: the template is
            # cached, with what was rejected, so the model is not asked again.
            metrics.SUMMARY_FALLBACKS.labels(reason=verdict.reason or "unfit").inc()
            answer = self._answer(facts, verdict.reason)
            answer["rejected"] = {"text": text, "invented": sorted(verdict.invented),
                                  "unsupported": sorted(verdict.unsupported)}
            return answer, True
        return {"summary": text, "source": "model", "model": model, "facts": facts.to_dict(),
                "fallback_reason": None, "interests_named": sorted(verdict.named),
                "cached": False}, True

    @staticmethod
    def _answer(facts: SummaryFacts, reason: str | None) -> dict[str, Any]:
        return {"summary": template_summary(facts), "source": "template", "model": None,
                "facts": facts.to_dict(), "fallback_reason": reason, "cached": False}
