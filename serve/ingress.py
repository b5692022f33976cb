"""The HTTP ingress: a Ray Serve deployment with a FastAPI app, routing calls to the shards.

Validation happens here, before anything is written: a request with one bad event is refused
whole with a 422 naming ``events[i].field``. Valid events are grouped by user, users by shard
(rendezvous hashing), and each shard appends its users' batches durably before folding them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from typing import Any

import ray
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from ray import serve

from actors.catalog_registry import NAMESPACE
from actors.shard import ProfileShard, ShardSettings
from portrait import codec
from portrait.catalog import from_dict as item_from_dict
from portrait.errors import (
    EncoderUnavailable,
    EventIdConflict,
    InvalidInput,
    PayloadTooLarge,
    PortraitError,
    StorageUnavailable,
    VersionConflict,
)
from portrait.routing import owner_index
from serve import api_models as m
from serve import ingress_metrics as metrics
from serve.settings import Settings

_log = logging.getLogger(__name__)
RETRY_AFTER_S = "2"

app = FastAPI(
    title="Portrait",
    version="1",
    description="Live, LLM-encoded, event-sourced user profiles and recommendations.",
)


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str, field: str | None = None) -> None:
        self.status, self.error, self.message, self.field = status, error, message, field


def _body(error: str, message: str, field: str | None) -> dict[str, Any]:
    return {"error": error, "message": message, **({"field": field} if field else {})}


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": RETRY_AFTER_S} if exc.status == 503 else None
    return JSONResponse(_body(exc.error, exc.message, exc.field), exc.status, headers=headers)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
    loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
    field = ".".join(loc) or "body"
    return JSONResponse(_body("InvalidField", f"{field}: {first.get('msg')}", field), 422)


def _from_portrait(exc: PortraitError, prefix: str = "") -> ApiError:
    field = getattr(exc, "field", None)
    field = f"{prefix}{field}" if field and prefix else field
    name = type(exc).__name__
    if isinstance(exc, PayloadTooLarge):
        return ApiError(413, name, f"{prefix}{exc}", field)
    if isinstance(exc, InvalidInput):
        return ApiError(422, name, f"{field}: {exc.reason}", field)
    if isinstance(exc, (VersionConflict, EventIdConflict)):
        return ApiError(409, name, str(exc), field)
    if isinstance(exc, StorageUnavailable):
        return ApiError(503, name, "the event store is unreachable; retry later")
    if isinstance(exc, EncoderUnavailable):
        return ApiError(503, name, "the text encoder is unavailable; retry later")
    return ApiError(500, name, str(exc))


def _shard_error(result: dict[str, Any]) -> ApiError:
    status = {
        "InvalidField": 422, "MissingField": 422, "UnknownEventType": 422,
        "PayloadTooLarge": 413, "VersionConflict": 409, "EventIdConflict": 409,
        "StorageUnavailable": 503, "EncoderUnavailable": 503,
    }.get(result["error"], 500)
    return ApiError(status, result["error"], result["message"], result.get("field"))


@serve.deployment(max_ongoing_requests=256)
@serve.ingress(app)
class PortraitIngress:
    """Routes HTTP calls to the ProfileShard actors and the catalog."""

    def __init__(self, settings: Settings, database_url: str, encoder_handle: Any) -> None:
        self._settings = settings
        self._url = database_url
        self._encoder_handle = encoder_handle
        shard_settings = ShardSettings(
            database_url=database_url,
            variants=settings.variant_policy(),
            host=settings.host_settings(),
        )
        self._names = [f"portrait-shard-{i}" for i in range(settings.shards)]
        # Named and detached: every ingress replica finds the same shards, and a replica
        # restart does not take the users' shards down with it.
        self._shards = [
            ProfileShard.options(
                name=name, namespace=NAMESPACE, get_if_exists=True, lifetime="detached"
            ).remote(name, shard_settings, encoder_handle)
            for name in self._names
        ]
        self._started = False
        self._start_lock = asyncio.Lock()

    async def _ready(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            from serve.encoder_deployment import EncoderClient
            from serve.catalog_publisher import CatalogPublisher
            from storage.catalog import ItemCatalog
            from storage.database import create_engine
            from storage.postgres import PostgresEventLog

            self._engine = create_engine(self._url)
            self._encoder = await EncoderClient(self._encoder_handle).connect()
            self._log = PostgresEventLog(self._engine)
            self._catalog = ItemCatalog(self._engine, self._encoder)
            self._publisher = CatalogPublisher(self._catalog, self._engine, self._encoder)
            await self._publisher.publish(self._shards, force=True)
            await asyncio.gather(*(s.ready.remote() for s in self._shards))
            self._started = True

    def _shard_for(self, user_id: str) -> Any:
        return self._shards[owner_index(user_id, self._names)]

    async def _call(self, ref: Any) -> Any:
        """Await a shard call; a dead shard (Ray restarts it) is a 503 the client retries."""
        try:
            result = await ref
        except ray.exceptions.RayActorError as exc:
            raise ApiError(503, "ShardUnavailable", f"shard restarting: {exc.__class__.__name__}") from exc
        if isinstance(result, dict) and "error" in result and "message" in result:
            raise _shard_error(result)
        return result

    # -- events ------------------------------------------------------------------------------

    @app.post("/v1/events", response_model=m.IngestResponse, tags=["events"],
              responses={413: {"model": m.ErrorBody}, 422: {"model": m.ErrorBody},
                         503: {"model": m.ErrorBody}})
    async def ingest(self, body: m.IngestRequest) -> JSONResponse:
        """Append a batch of events. All events are validated before anything is written;
        each user's events are appended all-or-nothing and folded into the live profile
        before the response, so the next recommendation already reflects them."""
        started = time.perf_counter()
        if len(body.events) > self._settings.max_batch_events:
            raise ApiError(413, "PayloadTooLarge",
                           f"{len(body.events)} events exceed the batch limit of "
                           f"{self._settings.max_batch_events}", "events")
        if not body.events:
            return JSONResponse({"results": []})
        per_user: dict[str, list[bytes]] = defaultdict(list)
        order: list[tuple[str, str]] = []
        for i, raw in enumerate(body.events):
            try:
                event = codec.from_dict(raw)
                per_user[event.user_id].append(codec.encode(event))
            except PortraitError as exc:
                raise _from_portrait(exc, prefix=f"events[{i}].") from None
            order.append((event.user_id, event.event_id))
        await self._ready()
        by_shard: dict[int, dict[str, list[bytes]]] = defaultdict(dict)
        for user_id, payloads in per_user.items():
            by_shard[owner_index(user_id, self._names)][user_id] = payloads
        outcomes = await asyncio.gather(
            *(self._call(self._shards[i].ingest.remote(batch)) for i, batch in by_shard.items())
        )
        per_user_result: dict[str, Any] = {}
        for outcome in outcomes:
            per_user_result.update(outcome)
        results, failed = [], 0
        cursor: dict[str, int] = defaultdict(int)
        for user_id, event_id in order:
            res = per_user_result[user_id]
            if isinstance(res, dict):  # the user's whole batch failed
                failed += 1
                results.append({"event_id": event_id, "user_id": user_id, **res})
            else:
                results.append({"user_id": user_id, **res[cursor[user_id]]})
                cursor[user_id] += 1
        metrics.INGESTED.inc(len(order) - failed)
        metrics.INGEST_LATENCY.observe(time.perf_counter() - started)
        if failed and all(isinstance(r, dict) for r in per_user_result.values()):
            statuses = {_shard_error(r).status for r in per_user_result.values()}
            status = statuses.pop() if len(statuses) == 1 else 207
        else:
            status = 207 if failed else 200
        return JSONResponse({"results": results}, status_code=status,
                            headers={"Retry-After": RETRY_AFTER_S} if status == 503 else None)

    @app.get("/v1/users/{user_id}/events", response_model=m.AuditPage, tags=["audit"])
    async def audit(self, user_id: str, after: int = Query(0, ge=0),
                    limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        """The user's event log in seq order, a page at a time: the audit trail."""
        await self._ready()
        try:
            page = await self._log.read(user_id, after_seq=after, limit=limit)
        except PortraitError as exc:
            raise _from_portrait(exc) from None
        if not page and after == 0:
            raise ApiError(404, "UnknownUser", f"no events for user {user_id!r}", "user_id")
        return {
            "user_id": user_id,
            "events": [{"seq": r.seq, "position": r.position, "recorded_at": r.recorded_at,
                        "event": codec.to_dict(r.event)} for r in page],
            "next_after": page[-1].seq if len(page) == limit else None,
        }

    # -- profiles and recommendations -----------------------------------------------------

    @app.get("/v1/users/{user_id}/recommendations", response_model=m.RecommendationsResponse,
             tags=["recommendations"])
    async def recommendations(
        self, user_id: str, k: int = Query(10, ge=1, le=200),
        diversity: float = Query(0.0, ge=0.0, le=1.0),
        tags: list[str] = Query([], description="Only items carrying one of these tags."),
        exclude: list[str] = Query([], description="Item ids not to recommend."),
    ) -> JSONResponse:
        """Top-k items for the user now, with the reasons behind each. Users without events
        get the cold-start ranking (popularity)."""
        started = time.perf_counter()
        await self._ready()
        out = await self._call(
            self._shard_for(user_id).recommend.remote(user_id, k, diversity, tags, exclude)
        )
        metrics.RECOMMEND_LATENCY.labels(variant=out["variant"]).observe(time.perf_counter() - started)
        # The shard builds exactly the documented schema; returning the response directly
        # skips FastAPI's re-validation and re-encoding of it on the hot path.
        return JSONResponse(out)

    @app.get("/v1/users/{user_id}/profile", tags=["profiles"])
    async def profile(
        self, user_id: str, at_seq: int | None = Query(None, ge=0),
        at_time: float | None = Query(None, ge=0, description="Unix seconds (event time)."),
        top: int = Query(20, ge=1, le=200),
    ) -> JSONResponse:
        """The profile now, or rebuilt as of a past seq or event time (time travel)."""
        await self._ready()
        out = await self._call(self._shard_for(user_id).profile.remote(user_id, at_seq, at_time, top))
        if out["event_count"] == 0 and at_seq is None and at_time is None:
            raise ApiError(404, "UnknownUser", f"no events for user {user_id!r}", "user_id")
        return JSONResponse(out)  # plain JSON data from the shard; see recommendations()

    @app.get("/v1/users/{user_id}/profile/changes", tags=["profiles"])
    async def changes(
        self, user_id: str, from_seq: int = Query(..., ge=0),
        to_seq: int | None = Query(None, ge=0), top: int = Query(10, ge=1, le=100),
    ) -> JSONResponse:
        """Which interests rose or fell between two points of the user's history."""
        if to_seq is not None and to_seq < from_seq:
            raise ApiError(422, "InvalidField", "to_seq: must be >= from_seq", "to_seq")
        await self._ready()
        return JSONResponse(await self._call(
            self._shard_for(user_id).changes.remote(user_id, from_seq, to_seq, top)
        ))

    # -- catalog ---------------------------------------------------------------------------

    async def _upsert(self, raw_items: list[dict[str, Any]], prefix: str) -> dict[str, Any]:
        if len(raw_items) > self._settings.max_batch_events:
            raise ApiError(413, "PayloadTooLarge", f"more than {self._settings.max_batch_events} items", "items")
        records = []
        for i, raw in enumerate(raw_items):
            try:
                records.append(item_from_dict(raw))
            except PortraitError as exc:
                raise _from_portrait(exc, prefix=prefix.format(i=i)) from None
        await self._ready()
        try:
            result = await self._catalog.upsert(records)
        except PortraitError as exc:
            raise _from_portrait(exc) from None
        version = await self._publisher.publish(self._shards)
        return {"inserted": result.inserted, "updated": result.updated,
                "unchanged": result.unchanged, "encoded": result.encoded,
                "catalog_version": version}

    @app.post("/v1/items", response_model=m.UpsertResponse, tags=["items"])
    async def upsert_items(self, body: m.ItemsRequest) -> dict[str, Any]:
        """Insert or update items; only items whose text changed are re-encoded. New items
        are recommendable as soon as this returns."""
        return await self._upsert(body.items, "items[{i}].")

    @app.put("/v1/items/{item_id}", response_model=m.UpsertResponse, tags=["items"])
    async def put_item(self, item_id: str, body: m.ItemBody) -> dict[str, Any]:
        """Insert or update one item."""
        return await self._upsert([{"id": item_id, **body.model_dump()}], "")

    @app.get("/v1/items/{item_id}", tags=["items"])
    async def get_item(self, item_id: str) -> dict[str, Any]:
        await self._ready()
        item = await self._catalog.get(item_id)
        if item is None:
            raise ApiError(404, "UnknownItem", f"no item {item_id!r}", "item_id")
        return {"id": item.item_id, "title": item.title, "description": item.description,
                "tags": list(item.tags), "attributes": dict(item.attributes)}

    # -- operations ------------------------------------------------------------------------

    @app.get("/healthz", tags=["operations"])
    async def healthz(self) -> dict[str, str]:
        """The process is up (no dependencies checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(self) -> JSONResponse:
        """Ready when Postgres answers, the catalog is published and every shard is up."""
        try:
            await asyncio.wait_for(self._ready(), timeout=30)
            from storage.catalog import catalog_version

            await catalog_version(self._engine)
            await asyncio.wait_for(
                asyncio.gather(*(s.ready.remote() for s in self._shards)), timeout=10
            )
        except Exception as exc:  # readiness reports, it does not raise
            return JSONResponse({"status": "unavailable", "reason": repr(exc)[:300]}, 503,
                                headers={"Retry-After": RETRY_AFTER_S})
        return JSONResponse({"status": "ready", "shards": len(self._shards),
                             "catalog_version": self._publisher.version})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    async def metrics_endpoint(self) -> PlainTextResponse:
        """Prometheus metrics: this replica's, plus every shard's and the encoder's."""
        shard_stats = await asyncio.gather(
            *(s.stats.remote() for s in self._shards), return_exceptions=True
        )
        encoder_stats = None
        try:
            encoder_stats = await self._encoder_handle.stats.remote()
        except Exception:
            _log.warning("encoder stats unavailable")
        text = metrics.render(dict(zip(self._names, shard_stats)), encoder_stats)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
