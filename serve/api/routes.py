"""The HTTP routes. :func:`create_app` serves one :class:`ApiContext`; the Serve ingress and
the in-process system both use it, so tests without Ray exercise the real routing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from portrait.catalog import item_from_dict
from portrait.errors import (
    BatchTooLarge,
    InvalidField,
    PortraitError,
    UnknownItem,
)
from portrait.events import MAX_ID_LENGTH
from portrait.validation import MAX_UNIX_TIME, check_id
from serve import inspector, metrics
from serve.api import errors, fanout, openapi, responses, summaries
from serve.api import models as m
from serve.api.auth import requires
from serve.api.body_limit import BodyLimit
from serve.api.context import ApiContext
from serve.api.errors import unknown_user
from serve.api.path_params import ItemId, UserId
from serve.experiments import UnknownExperiment, UnknownImpression, new_request_id

# Sequence numbers and positions are Postgres bigints: a larger query value is a 422 here,
# not an overflow in the driver.
INT64_MAX = 2**63 - 1




def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.portrait
    return ctx


def create_app(ctx: ApiContext) -> FastAPI:
    app = FastAPI(
        title="Portrait", version="1",
        description="Live, LLM-encoded, event-sourced user profiles and recommendations.",
        # FastAPI's own pages load Swagger UI and ReDoc from a CDN: blank where our users run
        # without internet. /docs is served from the swagger-ui-bundle package instead.
        docs_url=None, redoc_url=None,
    )
    app.state.portrait = ctx
    app.add_middleware(BodyLimit, max_bytes=ctx.limits.max_body_bytes)
    errors.install(app)
    controller = ctx.control.controller  # its bound on a manual resize goes in the document
    openapi.install(app, max_batch=ctx.limits.max_batch_events,
                    max_future_skew_s=ctx.limits.max_future_skew_s,
                    max_shards=controller.max_shards if controller is not None else None)
    _events(app)
    _users(app)
    summaries.install(app)  # GET /v1/users/{id}/summary
    _items(app)
    _item_space(app)
    _experiments(app)
    _shards(app)
    _operations(app)
    _docs(app)
    app.mount("/inspector", inspector.create_app(ctx))  # HTML pages (serve/inspector)
    return app


def _events(app: FastAPI) -> None:
    @app.post("/v1/events", response_model=m.IngestResponse, tags=["events"],
             dependencies=[requires("events:write")])
    async def ingest(body: m.IngestRequest, request: Request) -> JSONResponse:
        """Append a batch of events. All events are validated before anything is written;
        each user's events are appended all-or-nothing and folded into the live profile
        before the response, so the next recommendation already reflects them."""
        started = time.perf_counter()
        ctx = _ctx(request)
        if ctx.auth is not None:  # the token's events-per-second allowance, before any work
            ctx.auth.charge(request.state.token, "events", len(body.events))
        results, status = await fanout.ingest(ctx, body.events)
        if ctx.experiments is not None:  # live attribution counters (cheap, in memory)
            ctx.experiments.observe(body.events, results, ctx.internal)
        recorded = sum(1 for r in results if "seq" in r and not r["duplicate"])
        metrics.INGESTED.inc(recorded)
        if recorded and ctx.retraining is not None:
            await ctx.retraining.note_events(recorded)
        metrics.INGEST_LATENCY.observe(time.perf_counter() - started)
        return JSONResponse({"results": results}, status, headers=errors.retry_headers(status))

    @app.get("/v1/users/{user_id}/events", response_model=m.AuditPage, tags=["audit"],
             dependencies=[requires("profiles:read")])
    async def audit(user_id: UserId, request: Request, after: int = Query(0, ge=0, le=INT64_MAX),
                    limit: int = Query(100, ge=1, le=1000)) -> JSONResponse:
        """The user's event log in seq order, a page at a time: the audit trail."""
        ctx = _ctx(request)
        page = await ctx.stores.events.read(ctx.internal(user_id), after_seq=after, limit=limit)
        if not page and after == 0:
            raise await unknown_user(ctx, user_id)
        return JSONResponse(responses.audit_page(user_id, page, limit))


def _users(app: FastAPI) -> None:
    @app.get("/v1/users/{user_id}/recommendations", response_model=m.RecommendationsResponse,
             tags=["recommendations"], dependencies=[requires("recommendations:read")])
    async def recommendations(
        user_id: UserId, request: Request, k: int = Query(10, ge=1, le=200),
        diversity: float = Query(0.0, ge=0.0, le=1.0),
        tags: list[str] = Query([], description="Only items carrying one of these tags."),
        exclude: list[str] = Query([], description="Item ids not to recommend."),
    ) -> JSONResponse:
        """Top-k items for the user now, with the reasons behind each. Users without events
        get the cold-start ranking (popularity)."""
        started = time.perf_counter()
        ctx = _ctx(request)
        await ctx.ready()
        stored = ctx.internal(user_id)
        request_id = new_request_id()
        out = await ctx.on_owner(
            stored, lambda s: s.recommend(stored, k, diversity, tags, exclude, request_id))
        if ctx.experiments is not None:  # queued only: never waits for the store
            ctx.experiments.served(request_id, out)
        metrics.RECOMMEND_LATENCY.labels(variant=out.variant).observe(
            time.perf_counter() - started
        )
        return JSONResponse(responses.recommendations(out, user_id, request_id))

    @app.get("/v1/users/{user_id}/profile", response_model=m.ProfileResponse, tags=["profiles"],
             dependencies=[requires("profiles:read")])
    async def profile(
        user_id: UserId, request: Request,
        at_seq: int | None = Query(None, ge=0, le=INT64_MAX),
        at_time: float | None = Query(None, ge=0, le=MAX_UNIX_TIME,
                                      description="Unix seconds (event time)."),
        top: int = Query(20, ge=1, le=200),
    ) -> JSONResponse:
        """The profile now, or rebuilt as of a past seq or event time (time travel)."""
        ctx = _ctx(request)
        await ctx.ready()
        stored = ctx.internal(user_id)
        report = await ctx.on_owner(stored, lambda s: s.profile(stored, at_seq, at_time, top))
        if report.summary["event_count"] == 0 and at_seq is None and at_time is None:
            raise await unknown_user(ctx, user_id)
        return JSONResponse(responses.profile(report, user_id))

    @app.get("/v1/users/{user_id}/profile/changes", response_model=m.ChangesResponse,
             tags=["profiles"], dependencies=[requires("profiles:read")])
    async def changes(
        user_id: UserId, request: Request, from_seq: int = Query(..., ge=0, le=INT64_MAX),
        to_seq: int | None = Query(None, ge=0, le=INT64_MAX), top: int = Query(10, ge=1, le=100),
    ) -> JSONResponse:
        """Which interests rose or fell between two points of the user's history."""
        if to_seq is not None and to_seq < from_seq:
            raise InvalidField("to_seq", "must be >= from_seq")
        ctx = _ctx(request)
        await ctx.ready()
        stored = ctx.internal(user_id)
        delta = await ctx.on_owner(stored, lambda s: s.changes(stored, from_seq, to_seq, top))
        return JSONResponse(responses.changes(delta, user_id))


    @app.delete("/v1/users/{user_id}", response_model=m.ErasureResponse, tags=["privacy"],
                dependencies=[requires("users:erase")],
                responses={404: {"model": m.ErrorBody}, 410: {"model": m.ErrorBody}})
    async def erase(user_id: UserId, request: Request) -> JSONResponse:
        """Erase the user (crypto-shredding): their data key is destroyed, so what remains
        of them in the log is unreadable; their snapshots and cached text features are
        deleted, they leave popularity and the next retrain, and an erasure record is kept.
        An event for the id afterwards starts a fresh profile."""
        ctx = _ctx(request)
        await ctx.ready()
        stored = ctx.internal(user_id)
        token = getattr(request.state, "token", None)
        requested_by = token.name if token is not None else "(authentication off)"
        now = time.time()
        if ctx.experiments is not None:  # queued impressions first: the erasure deletes rows
            await ctx.experiments.forget_user(stored)
        record = await ctx.on_owner(stored, lambda s: s.erase(stored, requested_by, now))
        if record is None:
            raise await unknown_user(ctx, user_id)
        metrics.ERASURES.inc()
        return JSONResponse(responses.erasure(record, user_id))


def _items(app: FastAPI) -> None:
    async def upsert(ctx: ApiContext, raw_items: list[dict[str, Any]], prefix: str) -> JSONResponse:
        """Every item is checked (fields, vectors, duplicate ids, widths and models against
        the active encoder) before anything is written: a refused batch changes nothing."""
        limit = ctx.limits.max_batch_events
        if len(raw_items) > limit:
            raise BatchTooLarge("items", len(raw_items), limit)
        records, vectors = [], []
        for i, raw in enumerate(raw_items):
            try:
                record, vector = item_from_dict(raw)
            except PortraitError as exc:
                raise errors.InRequest(exc, prefix.format(i=i)) from None
            records.append(record)
            vectors.append(vector)
        await ctx.ready()
        result = await ctx.catalog.upsert(records, vectors=vectors, names=prefix, atomic=True)
        version = await ctx.control.publish()
        return JSONResponse({**responses.upserted(result, version), "given": result.given})

    @app.post("/v1/items", response_model=m.UpsertResponse, tags=["items"],
             dependencies=[requires("items:write")])
    async def upsert_items(body: m.ItemsRequest, request: Request) -> JSONResponse:
        """Insert or update items; only items whose text changed are re-encoded. An item may
        bring its own vector (`vector` or `vector_b64`, with `vector_model`): it is stored
        as given, not encoded. The batch is refused whole (413, 422 naming the field) when
        one item is at fault. New items are recommendable as soon as this returns."""
        return await upsert(_ctx(request), body.items, "items[{i}].")

    @app.put("/v1/items/{item_id}", response_model=m.UpsertResponse, tags=["items"],
             dependencies=[requires("items:write")])
    async def put_item(item_id: ItemId, body: m.ItemBody, request: Request) -> JSONResponse:
        """Insert or update one item."""
        return await upsert(_ctx(request), [{"id": item_id, **body.model_dump()}], "")

    @app.get("/v1/items/{item_id}", response_model=m.ItemResponse, tags=["items"],
             dependencies=[requires("recommendations:read")])
    async def get_item(item_id: ItemId, request: Request) -> JSONResponse:
        ctx = _ctx(request)
        await ctx.ready()
        record = await ctx.catalog.get(item_id)
        if record is None:
            raise UnknownItem(item_id)
        return JSONResponse(responses.item(record))


def _shards(app: FastAPI) -> None:
    @app.get("/v1/shards", response_model=m.ShardsResponse, tags=["operations"],
             dependencies=[requires("admin")])
    async def shards(request: Request) -> JSONResponse:
        """The shard set this ingress routes by, with each shard's load."""
        ctx = _ctx(request)
        await ctx.ready()
        await ctx.router.follow_topology()
        stats = await asyncio.gather(*(s.stats() for s in ctx.router.shards))
        return JSONResponse({
            "epoch": ctx.router.topology.epoch,
            "shards": [{"name": n, "active_users": st.get("active_users", 0),
                        "pending_events": st.get("pending_events", 0),
                        "calls_in_flight": st.get("calls_in_flight", 0)}
                       for n, st in zip(ctx.router.names, stats, strict=True)],
        })

    @app.post("/v1/shards", response_model=m.ResizeResponse, tags=["operations"],
              dependencies=[requires("admin")])
    async def resize(body: m.ResizeRequest, request: Request) -> JSONResponse:
        """Change the number of shards under traffic: users move by rendezvous hashing
        (about 1/N per added shard), each handed off by its old shard (snapshot, then
        refused there) before the new one serves it."""
        return JSONResponse(await _ctx(request).control.resize(body.count))


def _experiments(app: FastAPI) -> None:
    @app.post("/v1/impressions/{request_id}/shown", response_model=m.ShownResponse,
              tags=["experiments"], dependencies=[requires("events:write")])
    async def shown(body: m.ShownRequest, request: Request,
                    request_id: str = Path(..., description="The recommendation response's "
                                           "`request_id`.")) -> JSONResponse:
        """Report which of a response's items the client actually displayed, when it showed
        fewer than it fetched: attribution and the report then count only those."""
        check_id("request_id", request_id, MAX_ID_LENGTH)
        check_id("user_id", body.user_id, MAX_ID_LENGTH)
        ctx = _ctx(request)
        if ctx.experiments is None:
            raise UnknownImpression(request_id)
        count = await ctx.experiments.set_shown(request_id, ctx.internal(body.user_id),
                                                body.item_ids)
        return JSONResponse({"request_id": request_id, "shown": count})

    @app.get("/v1/experiments/{name}/report", tags=["experiments"],
             dependencies=[requires("admin")])
    async def report(request: Request,
                     name: str = Path(..., description="The experiment's name.")) -> JSONResponse:
        """Per variant: users, impressions, click-through, conversion, MRR of the first
        interacted item, coverage, each with a 95% interval; the differences to the control;
        the interleaving preference with a sign test; warnings when the sample is too small.
        Rebuilt from the impressions and the event log on every call."""
        check_id("name", name, MAX_ID_LENGTH)
        ctx = _ctx(request)
        if ctx.experiments is None:
            raise UnknownExperiment(name)
        catalog_size = len(await ctx.stores.catalog_store.titles())
        return JSONResponse(await ctx.experiments.report(name, catalog_size))


def _item_space(app: FastAPI) -> None:
    @app.get("/v1/item-space", tags=["items"], dependencies=[requires("recommendations:read")])
    async def item_space(request: Request) -> JSONResponse:
        """The collaborative item space: its version, the last retrain, failures."""
        ctx = _ctx(request)
        if ctx.retraining is None:
            return JSONResponse({"enabled": False, "reason": "no variant uses collaborative "
                                 "item vectors (item_vectors.alpha is 0)"})
        return JSONResponse({"enabled": True, **await ctx.retraining.stats()})

    @app.post("/v1/item-space/retrain", tags=["items"], dependencies=[requires("admin")])
    async def retrain(request: Request) -> JSONResponse:
        """Retrain the collaborative item vectors from the event log now and publish them to
        every shard; answers when done (concurrent calls share one retrain). The service
        also retrains by itself after enough new events or time."""
        ctx = _ctx(request)
        if ctx.retraining is None:
            raise InvalidField("item_vectors.alpha", "no variant uses collaborative vectors")
        await ctx.ready()
        return JSONResponse({"enabled": True, **await ctx.retraining.retrain()})


def _docs(app: FastAPI) -> None:
    import pathlib  # (fastapi.Path, imported above, is the route parameter)

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    swagger_ui_path = pathlib.Path(__file__).with_name("swagger_ui")  # v5, vendored: README

    app.mount("/docs/assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Portrait API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )


def _operations(app: FastAPI) -> None:
    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up (no dependencies checked)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the store answers, the catalog is published and every shard is up."""
        ctx = _ctx(request)
        try:
            await asyncio.wait_for(ctx.ready(), timeout=30)
            await ctx.stores.catalog_store.version()
            await asyncio.wait_for(asyncio.gather(*(s.ready() for s in ctx.router.shards)),
                                   timeout=10)
        except Exception as exc:  # readiness reports, it does not raise
            return JSONResponse({"status": "unavailable", "reason": errors.public_reason(exc)},
                                503, headers=errors.retry_headers(503))
        return JSONResponse({"status": "ready", "shards": len(ctx.router.shards),
                             "catalog_version": ctx.control.catalog_version})

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse,
             dependencies=[requires("metrics:read")])
    async def metrics_endpoint(request: Request) -> PlainTextResponse:
        """Prometheus metrics: this process's, plus every shard's and the encoder's."""
        ctx = _ctx(request)
        shard_stats = await asyncio.gather(*(s.stats() for s in ctx.router.shards),
                                           return_exceptions=True)
        try:
            encoder_stats = await ctx.encoder_stats()
        except Exception:  # the scrape still reports the shards
            encoder_stats = None
        retrain = None
        if ctx.retraining is not None:
            try:
                retrain = await ctx.retraining.stats()
            except Exception:  # as above
                retrain = None
        text = metrics.render(dict(zip(ctx.router.names, shard_stats, strict=True)), encoder_stats,
                              retrain)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")
