"""The profile inspector: server-rendered pages over the same context the API serves.

Mounted at ``/inspector`` by :func:`serve.api.routes.create_app` as its own small ASGI app,
so its HTML error pages, login cookie and security headers never touch the API's routes. It
reads through the same calls as the API (the shards' profile, time travel, changes and
recommendations; the event log; the catalog) and adds no state of its own.

Pages take the user or item id as a query parameter (``?user=``): ids may hold any printable
character, ``/`` included, which a path segment cannot carry.

Every page works without script; htmx (vendored, :mod:`static/README.md`) only swaps the
timeline's profile panel and the changes chart in place and keeps the address bar in step.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portrait import codec
from portrait.catalog import MAX_ITEM_ID_LENGTH
from portrait.errors import (
    EncoderUnavailable,
    InvalidField,
    PortraitError,
    Unauthenticated,
    UnknownItem,
    UnknownUser,
)
from portrait.events import MAX_ID_LENGTH
from portrait.validation import check_id
from serve.api import errors
from serve.api.context import ApiContext
from serve.inspector import charts
from serve.inspector.session import (
    COOKIE,
    CookiePolicy,
    CrossSiteForm,
    LoginRequired,
    base_path,
    check_token,
    context,
    safe_next,
    same_origin_form,
    viewer,
)

HERE = Path(__file__).parent
TIMELINE_PAGE = 50
TOP = 15  # interests listed per kind
RECOMMENDATIONS = 20
MAX_LOGIN_BODY = 4096  # a token is 60 characters; a form far larger is not a login

# The pages load their script, style and pictures from this app only. htmx is configured
# (base.html) to need no inline style and no eval, so nothing inline has to be allowed.
SECURITY_HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Page addresses carry user ids: never sent to another site. Not "no-referrer": with it
    # browsers send "Origin: null" on the login post, which the same-origin check refuses.
    (b"referrer-policy", b"same-origin"),
]
NO_STORE = (b"cache-control", b"no-store")  # profiles are personal data: no disk cache


class _Headers:
    """Adds :data:`SECURITY_HEADERS` to every answer, and ``no-store`` to every page."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope["path"].startswith(f"{scope.get('root_path', '')}/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += SECURITY_HEADERS if static else [*SECURITY_HEADERS, NO_STORE]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _signed(value: float, digits: int = 3) -> str:
    if 0 < abs(value) < 10**-digits:  # a fall by decay alone: "-0.000" would hide it
        return f"{value:+.2g}"
    return f"{value:+.{digits}f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is text unless a template says otherwise
        undefined=jinja2.StrictUndefined,  # a misspelt name fails the page, not blanks it
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(when=_when, num=_num, signed=_signed, meter=charts.meter)
    return env


class Pages:
    """Renders the templates with what every page needs (base path, who is logged in)."""

    def __init__(self) -> None:
        self._env = _environment()

    def render(self, request: Request, name: str, code: int = 200,
               headers: dict[str, str] | None = None, **values: Any) -> HTMLResponse:
        ctx = context(request)
        html = self._env.get_template(name).render(
            base=base_path(request),
            auth_on=ctx.auth is not None,
            logged_in=ctx.auth is None or COOKIE in request.cookies,
            **values,
        )
        # Partial answers differ from full pages for the same address.
        return HTMLResponse(html, code, headers={"vary": "HX-Request", **(headers or {})})


def _partial(request: Request) -> bool:
    """An htmx swap asks for the fragment; a history restore asks for the whole page."""
    return (request.headers.get("hx-request") == "true"
            and request.headers.get("hx-history-restore-request") != "true")


def _user(user: str) -> str:
    check_id("user", user, MAX_ID_LENGTH)
    return user


def _link(base: str, page: str, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}/{page}?{query}" if query else f"{base}/{page}"


async def _titles(ctx: ApiContext, item_ids: Iterable[str]) -> dict[str, str]:
    """Titles for the items an answer names; ids alone while the catalog is unavailable."""
    wanted = sorted(set(item_ids))
    if not wanted:
        return {}
    try:
        catalog = ctx.catalog
    except EncoderUnavailable:
        return {}
    records = await asyncio.gather(*(catalog.get(i) for i in wanted))
    return {r.item_id: r.title for r in records if r is not None}


async def _profile(ctx: ApiContext, user_id: str, at_seq: int | None,
                   top: int = TOP) -> dict[str, Any]:
    """The profile summary now or as of ``at_seq`` (replayed from the log by the shard, as
    the API's ``?at_seq=``); UnknownUser when the user has no events at all."""
    await ctx.ready()
    stored = ctx.internal(user_id)
    report = await ctx.on_owner(stored, lambda s: s.profile(stored, at_seq, None, top))
    summary = dict(report.summary)
    if summary["event_count"] == 0 and at_seq is None:
        raise UnknownUser(user_id)
    summary["variant"] = report.variant
    summary.pop("user_id", None)  # the stored id: a pseudonym when ids are pseudonymised
    return summary


def create_app(ctx: ApiContext, cookies: CookiePolicy | None = None) -> FastAPI:
    """The inspector's app over ``ctx``; ``cookies`` defaults to the settings' policy
    (``PORTRAIT_INSPECTOR_SECURE_COOKIE``, in the context's limits)."""
    policy = cookies if cookies is not None else CookiePolicy(ctx.secure_cookie)
    pages = Pages()
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.portrait = ctx
    app.add_middleware(_Headers)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _install_errors(app, pages)
    _login_routes(app, pages, policy)
    _user_routes(app, pages)
    _catalog_routes(app, pages)
    return app


def _install_errors(app: FastAPI, pages: Pages) -> None:
    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        base = base_path(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        target = _link(base, "login", next=here, reason=exc.reason)
        if request.headers.get("hx-request") == "true":
            # A swap must not put the login form inside a page: htmx follows HX-Redirect.
            response: Response = Response(status_code=401, headers={"hx-redirect": target})
        elif request.method == "GET":
            response = RedirectResponse(target, 303)
        else:
            response = pages.render(request, "login.html", 401, next=here, error=exc.reason)
        if exc.clear:
            response.delete_cookie(COOKIE, path=base, httponly=True, samesite="strict")
        return response

    @app.exception_handler(PortraitError)
    async def _portrait(request: Request, exc: PortraitError) -> Response:
        status = errors.status_of(exc)
        errors.count(status, type(exc).__name__, exc)
        body = errors.error_body(exc)
        return pages.render(request, "error.html", status,
                            headers=errors.retry_headers(status, exc),
                            status=status, title=_TITLES.get(status, "Something went wrong"),
                            message=body["message"], kind=type(exc).__name__)

    @app.exception_handler(CrossSiteForm)
    async def _cross_site(request: Request, exc: CrossSiteForm) -> Response:
        return pages.render(request, "error.html", 403, status=403, title="Refused",
                            message="This form was sent from another site.", kind="CrossSite")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        first = (exc.errors() or [{"loc": ("query",), "msg": "invalid request"}])[0]
        field = ".".join(str(x) for x in first.get("loc", ()) if x not in ("query", "body"))
        return pages.render(request, "error.html", 422, status=422, title="Not a valid request",
                            message=f"{field}: {first.get('msg')}", kind="InvalidField")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        return pages.render(request, "error.html", exc.status_code, status=exc.status_code,
                            title=_TITLES.get(exc.status_code, "Error"),
                            message=str(exc.detail), kind="HTTP")


_TITLES = {401: "Not logged in", 403: "Not allowed", 404: "Not found", 422: "Not valid",
           429: "Too many requests", 503: "Unavailable, retry shortly"}


def _login_routes(app: FastAPI, pages: Pages, policy: CookiePolicy) -> None:
    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, next: str | None = None,
                         reason: str | None = None) -> Response:
        return pages.render(request, "login.html", next=safe_next(base_path(request), next),
                            error=reason)

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        """Check the pasted token and keep it in the login cookie. The token must be a valid
        one; which pages it opens is decided page by page by its scopes."""
        same_origin_form(request)
        base = base_path(request)
        body = await request.body()
        if len(body) > MAX_LOGIN_BODY:
            raise InvalidField("token", "the form is too large to hold a token")
        form = parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = safe_next(base, (form.get("next") or [""])[0])
        try:
            await check_token(request, token, None)
        except Unauthenticated as exc:
            return pages.render(request, "login.html", 401, next=target, error=str(exc))
        response = RedirectResponse(target, 303)
        if context(request).auth is not None:
            response.set_cookie(COOKIE, token, path=base, httponly=True, samesite="strict",
                                secure=policy.secure_for(request))
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        same_origin_form(request)
        base = base_path(request)
        response = RedirectResponse(f"{base}/login", 303)
        response.delete_cookie(COOKIE, path=base, httponly=True, samesite="strict")
        return response

    @app.get("/", response_class=HTMLResponse, dependencies=[viewer(None)])
    async def home(request: Request, user: str | None = None,
                   item: str | None = None) -> Response:
        """The search form; a search goes to the user's (or item's) page."""
        base = base_path(request)
        if user:
            return RedirectResponse(_link(base, "profile", user=_user(user.strip())), 303)
        if item:
            check_id("item", item.strip(), MAX_ITEM_ID_LENGTH)
            return RedirectResponse(_link(base, "item", id=item.strip()), 303)
        return pages.render(request, "home.html")


def _user_routes(app: FastAPI, pages: Pages) -> None:
    @app.get("/profile", response_class=HTMLResponse, dependencies=[viewer("profiles:read")])
    async def profile(request: Request, user: str = Query(...)) -> Response:
        ctx = context(request)
        summary = await _profile(ctx, _user(user), None)
        titles = await _titles(ctx, (r["item_id"] for r in summary["recent"]))
        return pages.render(request, "profile.html", user=user, tab="profile", p=summary,
                            titles=titles)

    @app.get("/timeline", response_class=HTMLResponse, dependencies=[viewer("profiles:read")])
    async def timeline(
        request: Request, user: str = Query(...),
        at: int | None = Query(None, ge=1, le=2**63 - 1,
                               description="show the profile as of this seq"),
        after: int = Query(0, ge=0, le=2**63 - 1),
    ) -> Response:
        """The audit trail a page at a time, beside the profile as of the chosen event
        (rebuilt by replaying the log up to it) and what that event changed."""
        ctx = context(request)
        stored = ctx.internal(_user(user))
        rows = await ctx.stores.events.read(stored, after_seq=after, limit=TIMELINE_PAGE + 1)
        if not rows and after == 0:
            raise UnknownUser(user)
        more = len(rows) > TIMELINE_PAGE
        rows = rows[:TIMELINE_PAGE]
        summary = await _profile(ctx, user, at)
        moved = None
        if at is not None:
            delta = await ctx.on_owner(stored, lambda s: s.changes(stored, at - 1, at, 5))
            moved = delta.to_dict()
        events = [{"seq": r.seq, "recorded_at": r.recorded_at, **codec.to_dict(r.event)}
                  for r in rows]
        titles = await _titles(ctx, [e["item_id"] for e in events if "item_id" in e]
                               + [r["item_id"] for r in summary["recent"]])
        values: dict[str, Any] = dict(
            user=user, tab="timeline", p=summary, at=at, after=after, events=events, more=more,
            titles=titles, moved=moved, page=TIMELINE_PAGE,
            older=rows[-1].seq if more else None)
        if _partial(request):
            return pages.render(request, "_timeline.html", **values)
        return pages.render(request, "timeline.html", **values)

    @app.get("/changes", response_class=HTMLResponse, dependencies=[viewer("profiles:read")])
    async def changes(
        request: Request, user: str = Query(...),
        from_seq: int | None = Query(None, ge=0, le=2**63 - 1),
        to_seq: int | None = Query(None, ge=0, le=2**63 - 1),
    ) -> Response:
        """Rises and falls between two points, as a chart. By default: from the middle of
        the log to now."""
        ctx = context(request)
        summary = await _profile(ctx, _user(user), None, top=1)
        last = int(summary["last_seq"])
        to = last if to_seq is None else to_seq
        start = to // 2 if from_seq is None else from_seq
        if start > to:
            raise InvalidField("from_seq", "must be <= to_seq")
        stored = ctx.internal(user)
        delta = (await ctx.on_owner(stored, lambda s: s.changes(stored, start, to, 12))).to_dict()
        chart = charts.diverging(delta["rose"], delta["fell"])
        values: dict[str, Any] = dict(
            user=user, tab="changes", d=delta, chart=chart, from_seq=start, to_seq=to,
            last_seq=last)
        if _partial(request):
            return pages.render(request, "_changes.html", **values)
        return pages.render(request, "changes.html", **values)

    @app.get("/recommendations", response_class=HTMLResponse,
             dependencies=[viewer("recommendations:read")])
    async def recommendations(request: Request, user: str = Query(...)) -> Response:
        """What the user would be served now, and why (the API's reasons)."""
        ctx = context(request)
        await ctx.ready()
        stored = ctx.internal(_user(user))
        out = await ctx.on_owner(
            stored, lambda s: s.recommend(stored, RECOMMENDATIONS, 0.0, [], []))
        # A user without events gets the cold-start ranking; say so rather than 404, as the
        # API serves it too.
        known = bool(await ctx.stores.events.read(stored, after_seq=0, limit=1))
        similar = [x.value for r in out.items for x in r.reasons if x.kind == "similar_to"]
        return pages.render(request, "recommendations.html", user=user, tab="recommendations",
                            out=out, known=known, titles=await _titles(ctx, similar))


def _catalog_routes(app: FastAPI, pages: Pages) -> None:
    @app.get("/item", response_class=HTMLResponse,
             dependencies=[viewer("recommendations:read")])
    async def item(request: Request, id: str = Query(...), user: str | None = None) -> Response:
        """A catalog item; ``user`` keeps the way back to the recommendations it came from."""
        check_id("id", id, MAX_ITEM_ID_LENGTH)
        ctx = context(request)
        await ctx.ready()
        record = await ctx.catalog.get(id)
        if record is None:
            raise UnknownItem(id)
        return pages.render(request, "item.html", item=record, user=user)
