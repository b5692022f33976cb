"""Ray Serve deployment of the text encoder, with cross-request batching.

Callers send whole lists (``encode(texts)``); the replica splits them into one call per text
into a ``@serve.batch`` method, so texts from many concurrent callers share engine batches,
and reassembles each caller's vectors in order. :func:`build_encoder_app` is the only place
the deployment is bound.

One replica serves several encoder versions (see "Encoder versions" in the README): a call
names the version it wants (a shard names its catalog view's, so it folds in one space until
its next view), none means the base the settings name. A version is loaded from its folder on
first use, after its record is checked against the folder (a mismatch is refused and never
loaded); the least recently used fine-tuned engine beyond the active and previous ones is
dropped (:mod:`encoding.version_engines`). Texts of different versions share the batcher and
are encoded per version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
from ray import serve
from ray.serve import Application

from encoding.encoder_checkpoint import CheckpointMismatch
from encoding.settings import EncoderSettings
from encoding.version_engines import VersionEngines
from encoding.vllm_encoder import validate_texts
from portrait.encoder_versions import EncoderVersion
from portrait.errors import EncoderUnavailable, InvalidField, InvalidInput
from portrait.ports import Encoder
from portrait.prompts import TextPrompts, prompts_of
from serve import metrics
from serve.encoder_autoscaling import POLICY, TEXTS_IN_FLIGHT

T = TypeVar("T")

EncoderFactory = Callable[[EncoderSettings], Encoder]

# Failed engine batches in a row after which check_health reports the replica unhealthy
# (Serve then replaces it).
UNHEALTHY_AFTER_FAILURES = 3


def _invalid_cause(err: BaseException) -> InvalidInput | None:
    """The InvalidInput a replica raised, found in what the handle raised."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, InvalidInput):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__
    return None


def _max_rss_mib() -> float | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    except Exception:  # pragma: no cover - not Linux
        return None


def vllm_encoder_factory(settings: EncoderSettings) -> Encoder:
    """The default factory: a started :class:`encoding.vllm_encoder.VllmEncoder`."""
    from encoding.vllm_encoder import VllmEncoder

    return VllmEncoder(settings).start()


def _check_batch_config(cfg: Mapping[str, Any]) -> tuple[int | None, float | None]:
    unknown = set(cfg) - {"max_batch_size", "batch_wait_timeout_s"}
    if unknown:
        raise ValueError(f"user_config: unknown keys {sorted(unknown)}")
    size = cfg.get("max_batch_size")
    wait = cfg.get("batch_wait_timeout_s")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"user_config.max_batch_size: must be an integer >= 1, got {size!r}")
    if wait is not None and (
        isinstance(wait, bool) or not isinstance(wait, (int, float)) or wait < 0
    ):
        raise ValueError(f"user_config.batch_wait_timeout_s: must be >= 0, got {wait!r}")
    return size, (None if wait is None else float(wait))


@serve.deployment(name="EncoderDeployment")
class EncoderDeployment:
    """One encoder engine per replica, fed by a batcher.

    The engine runs on a single worker thread, so the replica's event loop keeps accepting
    and queueing texts while a batch is being encoded; the next batch then starts full.
    """

    def __init__(
        self, settings: EncoderSettings, encoder_factory: EncoderFactory | None = None
    ) -> None:
        self._settings = settings
        factory = encoder_factory or vllm_encoder_factory
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder")
        t0 = time.perf_counter()
        # Built on the thread that will run every batch: the CPU engine binds its OpenMP
        # team to cores on the creating thread, and another thread gets a fresh unbound
        # team (Ray sets OMP_NUM_THREADS to the replica's num_cpus). Built here, batches ran
        # at about half the direct engine's speed (./dev bench encoder).
        self._encoder: Encoder = self._executor.submit(factory, settings).result()
        # Version engines are built on the same thread, when a batch first needs them.
        self._engines = VersionEngines(self._encoder, settings, factory)
        self._load_seconds = time.perf_counter() - t0
        self._batches = 0
        self._texts = 0
        self._max_batch = 0
        self._batch_sizes: dict[int, int] = {}
        self._consecutive_failures = 0
        self._texts_in_flight = 0  # what the autoscaling policy sizes the deployment by
        self._apply_batch_config(settings.batch_config())

    # -- configuration and health --------------------------------------------------------

    def reconfigure(self, user_config: Mapping[str, Any] | None) -> None:
        """Change ``max_batch_size`` / ``batch_wait_timeout_s`` without a restart."""
        self._apply_batch_config(user_config or {})

    def _apply_batch_config(self, cfg: Mapping[str, Any]) -> None:
        size, wait = _check_batch_config(cfg)
        if size is not None:
            self._encode_batch.set_max_batch_size(size)  # type: ignore[attr-defined]
        if wait is not None:
            self._encode_batch.set_batch_wait_timeout_s(wait)  # type: ignore[attr-defined]

    def check_health(self) -> None:
        if self._consecutive_failures >= UNHEALTHY_AFTER_FAILURES:
            raise RuntimeError(
                f"encoder failed {self._consecutive_failures} batches in a row"
            )

    async def info(self) -> dict[str, Any]:
        prompts = prompts_of(self._encoder)
        return {"model_id": self._encoder.model_id, "dim": self._encoder.dim,
                "query_prefix": prompts.query, "passage_prefix": prompts.passage}

    async def stats(self) -> dict[str, Any]:
        """Counters of this replica (tests and diagnostics; Prometheus has the same)."""
        return {
            "batches": self._batches,
            "texts": self._texts,
            "texts_in_flight": self._texts_in_flight,
            "max_batch_size_seen": self._max_batch,
            "batch_sizes": dict(self._batch_sizes),
            "max_batch_size": self._encode_batch._get_max_batch_size(),  # type: ignore[attr-defined]
            "batch_wait_timeout_s": self._encode_batch._get_batch_wait_timeout_s(),  # type: ignore[attr-defined]
            "load_seconds": self._load_seconds,
            "encoder_load_seconds": getattr(self._encoder, "load_seconds", None),
            "dtype": getattr(self._encoder, "dtype", None),
            "torch_threads": getattr(self._encoder, "torch_threads", None),
            "rss_max_mib": _max_rss_mib(),
            "engines": self._engines.loaded(),
        }

    def record_autoscaling_stats(self) -> dict[str, float]:
        """Serve's custom autoscaling metric (see serve/encoder_autoscaling.py)."""
        return {TEXTS_IN_FLIGHT: float(self._texts_in_flight)}

    # -- encoding ------------------------------------------------------------------------

    async def encode(
        self, texts: Sequence[str], version: EncoderVersion | None = None
    ) -> np.ndarray:
        """``(len(texts), dim)`` float32, L2-normalised, in order; batched across callers.
        ``version``: the encoder version to encode with (None: the base)."""
        t0 = time.perf_counter()
        try:
            items = validate_texts(texts)
        except InvalidInput:
            metrics.REQUESTS.labels(outcome="invalid").inc()
            raise  # PortraitError pickles (see portrait.errors), so the caller gets it whole
        metrics.QUEUE_DEPTH.inc(len(items))
        self._texts_in_flight += len(items)
        try:
            # Each call enters the batcher as whole chunks, not text by text: per-entry
            # overhead in the batcher was what held Serve at ~55% of the direct engine's
            # throughput. batch_size_fn counts texts, so a batch still holds up to
            # max_batch_size texts from any number of callers.
            size = self._encode_batch._get_max_batch_size()  # type: ignore[attr-defined]
            chunks = [(version, items[i : i + size]) for i in range(0, len(items), size)]
            parts = await asyncio.gather(*(self._encode_batch(c) for c in chunks))
            rows = [row for part in parts for row in part]
        except InvalidInput:
            metrics.REQUESTS.labels(outcome="invalid").inc()
            raise  # PortraitError pickles (see portrait.errors), so the caller gets it whole
        except BaseException:
            metrics.REQUESTS.labels(outcome="error").inc()
            raise
        finally:
            metrics.QUEUE_DEPTH.dec(len(items))
            self._texts_in_flight -= len(items)
        metrics.REQUESTS.labels(outcome="ok").inc()
        metrics.LATENCY.observe(time.perf_counter() - t0)
        if not rows:
            dim = self._encoder.dim if version is None else version.dim
            return np.zeros((0, dim), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    async def encode_direct(self, texts: Sequence[str]) -> np.ndarray:
        """The engine on ``texts`` as one call, bypassing the batcher (tests, benchmarks)."""
        items = validate_texts(texts)  # an InvalidField pickles whole to the caller
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._encoder.encode, items)

    @serve.batch(
        max_batch_size=64,
        batch_wait_timeout_s=0.005,
        batch_size_fn=lambda chunks: sum(len(c[1]) for c in chunks),
    )
    async def _encode_batch(
        self, chunks: list[tuple[EncoderVersion | None, list[str]]]
    ) -> list[list[np.ndarray]]:
        texts = [t for _, chunk in chunks for t in chunk]
        loop = asyncio.get_running_loop()
        try:
            matrix = await loop.run_in_executor(self._executor, self._encode_versions, chunks)
        except InvalidInput:
            raise
        except CheckpointMismatch as exc:  # refused, never loaded: the caller's to fix
            raise InvalidField("version", str(exc)) from None
        except Exception:
            self._consecutive_failures += 1
            raise
        self._consecutive_failures = 0
        self._batches += 1
        self._texts += len(texts)
        self._max_batch = max(self._max_batch, len(texts))
        self._batch_sizes[len(texts)] = self._batch_sizes.get(len(texts), 0) + 1
        metrics.BATCH_SIZE.observe(len(texts))
        out, start = [], 0
        for _, chunk in chunks:
            out.append(list(matrix[start : start + len(chunk)]))
            start += len(chunk)
        return out

    def _encode_versions(
        self, chunks: list[tuple[EncoderVersion | None, list[str]]]
    ) -> list[np.ndarray]:
        """Rows of every chunk in order, each version's texts in one engine call (on the
        engine thread, where version engines are also built)."""
        groups: dict[str, tuple[EncoderVersion | None, list[int], list[str]]] = {}
        position = 0
        for version, chunk in chunks:
            key = "" if version is None else version.model_id
            _, places, texts = groups.setdefault(key, (version, [], []))
            places.extend(range(position, position + len(chunk)))
            texts.extend(chunk)
            position += len(chunk)
        rows: list[np.ndarray] = [np.empty(0)] * position
        for version, places, texts in groups.values():
            matrix = self._engines.engine_for(version).encode(texts)
            for place, row in zip(places, matrix, strict=True):
                rows[place] = row
        return rows


def replica_options(settings: EncoderSettings) -> dict[str, object]:
    """How many replicas: a fixed ``num_replicas``, or Serve autoscaling from
    ``num_replicas`` to ``max_replicas``."""
    if settings.max_replicas is None or settings.max_replicas == settings.num_replicas:
        return {"num_replicas": settings.num_replicas}
    return {"autoscaling_config": {
        "min_replicas": settings.num_replicas,
        "initial_replicas": settings.num_replicas,
        "max_replicas": settings.max_replicas,
        # In texts, not calls: see serve/encoder_autoscaling.py.
        "target_ongoing_requests": settings.target_ongoing_requests,
        "policy": {"policy_function": POLICY},
        # A replica takes ~50 s to load on CPU: do not add one for a short burst.
        "upscale_delay_s": 10.0,
        "downscale_delay_s": settings.downscale_delay_s,
    }}


def build_encoder_app(
    settings: EncoderSettings, encoder_factory: EncoderFactory | None = None
) -> Application:
    """The encoder as a Serve application, sized from ``settings``."""
    ray_actor_options: dict[str, Any] = {"num_cpus": settings.num_cpus}
    if settings.num_gpus:
        ray_actor_options["num_gpus"] = settings.num_gpus
    app: Application = EncoderDeployment.options(  # type: ignore[attr-defined]
        **replica_options(settings),
        max_ongoing_requests=settings.max_ongoing_requests,
        ray_actor_options=ray_actor_options,
        user_config=settings.batch_config(),
    ).bind(settings, encoder_factory)
    return app


class ServeEncoderConnector:
    """Connects to the encoder deployment from any process of the cluster: by name (what a
    shard is given, resolved in its own process) or through a handle Serve bound."""

    def __init__(self, deployment: str, app_name: str, handle: Any = None) -> None:
        self._deployment = deployment
        self._app_name = app_name
        self._handle = handle

    async def connect(self) -> EncoderClient:
        handle = self._handle or serve.get_deployment_handle(
            self._deployment, app_name=self._app_name
        )
        return await EncoderClient(handle).connect()


class EncoderClient:
    """Async encoder over a Serve handle to :class:`EncoderDeployment`.

    Texts are validated here first, so a bad input raises :class:`InvalidField` locally with
    no round trip. ``model_id`` and ``dim`` are available after :meth:`connect`.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._model_id: str | None = None
        self._dim: int | None = None
        self._prompts = TextPrompts()

    async def connect(self) -> EncoderClient:
        try:
            info = await not_cancelled(self._handle.info.remote())
        except EncoderUnavailable:
            raise
        except Exception as e:
            raise EncoderUnavailable(f"the encoder is not reachable: {type(e).__name__}") from e
        self._model_id, self._dim = str(info["model_id"]), int(info["dim"])
        self._prompts = TextPrompts(str(info.get("query_prefix", "")),
                                    str(info.get("passage_prefix", "")))
        return self

    @property
    def model_id(self) -> str:
        if self._model_id is None:
            raise RuntimeError("EncoderClient.model_id is known after connect()")
        return self._model_id

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError("EncoderClient.dim is known after connect()")
        return self._dim

    @property
    def prompts(self) -> TextPrompts:
        """The deployed model's prefixes (known after :meth:`connect`); callers apply them."""
        return self._prompts

    async def encode(self, texts: Sequence[str]) -> np.ndarray:
        return await self.encode_for(None, texts)

    async def encode_for(
        self, version: EncoderVersion | None, texts: Sequence[str]
    ) -> np.ndarray:
        """:meth:`encode` with the named encoder version (None: the base)."""
        items = validate_texts(texts)
        if not items:
            dim = self._dim if version is None else version.dim
            return np.zeros((0, dim or 0), dtype=np.float32)
        try:
            result: np.ndarray = await not_cancelled(
                self._handle.encode.remote(items, version))
            return result
        except InvalidField:
            raise
        except Exception as e:
            cause = _invalid_cause(e)
            if cause is not None:
                raise InvalidField(cause.field, cause.reason) from None
            # A dead or overloaded replica, a lost connection: the caller can retry later.
            raise EncoderUnavailable(f"the encoder failed: {type(e).__name__}: {e}"[:300]) from e


async def not_cancelled(response: Awaitable[T]) -> T:
    """Await a Serve handle call; a cancellation that is not ours is the callee's failure.

    Serve turns a task cancelled on the replica's side (the replica was killed mid-call)
    into ``asyncio.CancelledError`` in the caller. Let through, it unwound our callers as if
    *they* had been cancelled: the ingress answered a bare 500, and a start-up it hit never
    ran again (every later request 500, measured after an encoder and an ingress kill).
    """
    try:
        return await response
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # we were cancelled: propagate
        raise EncoderUnavailable("the encoder replica went away during the call") from None

