"""The inspector's pages over the in-process system (memory stores, a hashing encoder): what
they show, who may see them, and that hostile text stays text. Seconds; no browser."""

from __future__ import annotations

import contextlib
import html
import itertools
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import markupsafe
import pytest
import pytest_asyncio
from fastapi import FastAPI

from actors.text_features import ThreadedEncoder
from serve.composition import InProcessSystem
from serve.inspector import create_app
from serve.inspector.session import COOKIE, CookiePolicy
from serve.settings import Settings, SettingsError, load_settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder

pytestmark = pytest.mark.asyncio(loop_scope="session")
T0 = 1_700_000_000
_names = itertools.count()

SCRIPT = "<script>alert('pwned')</script>"
HOSTILE_USER = '"><img src=x onerror=alert(1)>'
ITEMS = [
    {"id": "m1", "title": "Star Rebels", "description": "space rebels fight an empire",
     "tags": ["Sci-Fi", "Action"]},
    {"id": "m2", "title": "Galaxy Run", "description": "a starship crew escapes",
     "tags": ["Sci-Fi"]},
    {"id": "m3", "title": "Moon Base", "description": "astronauts alone on the moon",
     "tags": ["Sci-Fi", "Drama"]},
    {"id": "m4", "title": "Cooking Love", "description": "two chefs fall in love",
     "tags": ["Romance", "Comedy"]},
    {"id": "m5", "title": "Paris Kiss", "description": "a romance in paris", "tags": ["Romance"]},
    {"id": "m6", "title": "Toy Friends", "description": "toys come alive", "tags": ["Animation"]},
    {"id": "m7", "title": "<b onmouseover=alert(1)>Bold</b>", "description": SCRIPT,
     "tags": ["<i>Tag</i>"]},
]


def ev(kind: str, n: int, user: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": f"{user}-{n}", "user_id": user,
            "occurred_at": T0 + 3600 * n, **fields}


ANA = [
    ev("attributes_set", 1, "ana", attributes={"age_band": "25-34", "country": "PT"}),
    ev("rating", 2, "ana", item_id="m1", rating=5),
    ev("view", 3, "ana", item_id="m2"),
    ev("search", 4, "ana", query="space starship adventure"),
    ev("review", 5, "ana", item_id="m3", text=f"{SCRIPT} a lonely moon story", rating=4),
    ev("purchase", 6, "ana", item_id="m4"),
    ev("rating", 7, "ana", item_id="m5", rating=5),
    ev("dismiss", 8, "ana", item_id="m6"),
]


class Stack:
    def __init__(self, system: InProcessSystem, admin: dict[str, str]) -> None:
        self.system = system
        self.admin = admin

    async def api(self, path: str, **params: Any) -> Any:
        """What the JSON API says, with the admin token: what the pages must show."""
        async with self.client() as client:
            resp = await client.get(path, params=params, headers=self.admin)
            assert resp.status_code == 200, resp.text
            return resp.json()

    def client(self, app: Any = None) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app or self.system.app)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")

    async def token(self, *scopes: str) -> tuple[str, str]:
        """(name, text) of a new token."""
        header = await auth.headers(self.system, scopes)
        text = header["authorization"].removeprefix("Bearer ")
        records = await self.system.context.stores.tokens.list()
        name = next(r.name for r in records if text.startswith(f"ptk_{r.token_id}_"))
        return name, text


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def stack() -> AsyncIterator[Stack]:
    url = f"memory://inspector-{next(_names)}"
    # No token cache: a revocation must show on the very next page.
    settings = Settings(shards=2, snapshot_every=3, token_cache_s=0.0)
    system = auth.system(settings, url, ThreadedEncoder(HashingEncoder(dim=32)))
    admin = await auth.headers(system)
    transport = httpx.ASGITransport(app=system.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver",
                                 headers=admin) as api:
        assert (await api.post("/v1/items", json={"items": ITEMS})).status_code == 200
        hostile = [ev("search", 1, HOSTILE_USER, query=SCRIPT)]
        resp = await api.post("/v1/events", json={"events": ANA + hostile})
        assert resp.status_code == 200, resp.text
    try:
        yield Stack(system, admin)
    finally:
        await system.close()
        forget_memory(url)


@contextlib.asynccontextmanager
async def logged_in(stack: Stack, *scopes: str) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client logged in with a new token of ``scopes``."""
    _, token = await stack.token(*scopes)
    async with stack.client() as client:
        resp = await client.post("/inspector/login", data={"token": token})
        assert resp.status_code == 303, resp.text
        yield client


def section(page: str, element_id: str) -> str:
    """The page from the element with ``element_id`` on (enough to tell panels apart)."""
    start = page.index(f'id="{element_id}"')
    return page[start:]


async def test_pages_need_a_login_and_say_where_to_go(stack: Stack) -> None:
    async with stack.client() as client:
        for page in ("/inspector/", "/inspector/profile?user=ana", "/inspector/item?id=m1",
                     "/inspector/recommendations?user=ana"):
            resp = await client.get(page)
            assert resp.status_code == 303, page
            assert resp.headers["location"].startswith("/inspector/login?next=")
            assert "ana" not in (await client.get(resp.headers["location"])).text.split(
                "<main>")[1].split("API token")[0]
        # An htmx swap gets a 401 and a redirect for the whole page, not a login form inside
        # the timeline.
        swap = await client.get("/inspector/timeline?user=ana", headers={"hx-request": "true"})
        assert swap.status_code == 401 and swap.headers["hx-redirect"].startswith(
            "/inspector/login")


async def test_login_sets_a_strict_http_only_cookie_for_the_inspector_only(stack: Stack) -> None:
    _, token = await stack.token("profiles:read")
    async with stack.client() as client:
        bad = await client.post("/inspector/login", data={"token": "ptk_000000000000_" + "x" * 43})
        assert bad.status_code == 401 and "unknown token" in bad.text
        assert COOKIE not in bad.cookies
        resp = await client.post("/inspector/login", data={
            "token": token, "next": "/inspector/profile?user=ana"})
        assert resp.status_code == 303
        assert resp.headers["location"] == "/inspector/profile?user=ana"
        cookie = resp.headers["set-cookie"]
        assert f"{COOKIE}={token}" in cookie
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/inspector"):
            assert attribute.lower() in cookie.lower(), cookie
        assert "secure" not in cookie.lower()  # plain http, policy "auto"
        assert (await client.get("/inspector/profile?user=ana")).status_code == 200
        # The API stays bearer-only: the cookie opens no /v1 route, even sent by hand.
        api = await client.get("/v1/users/ana/profile", headers={"cookie": f"{COOKIE}={token}"})
        assert api.status_code == 401


async def test_login_refuses_other_sites_and_foreign_redirects(stack: Stack) -> None:
    _, token = await stack.token("profiles:read")
    async with stack.client() as client:
        for headers in ({"origin": "http://evil.example"}, {"sec-fetch-site": "cross-site"}):
            resp = await client.post("/inspector/login", data={"token": token}, headers=headers)
            assert resp.status_code == 403 and COOKIE not in resp.cookies
        for target in ("https://evil.example/", "//evil.example/x", "/v1/users/ana/profile"):
            resp = await client.post("/inspector/login", data={"token": token, "next": target})
            assert resp.headers["location"] == "/inspector/"
        same = await client.post("/inspector/login", data={"token": token},
                                 headers={"origin": "http://testserver",
                                          "sec-fetch-site": "same-origin"})
        assert same.status_code == 303


async def test_secure_flag_follows_the_policy(stack: Stack) -> None:
    _, token = await stack.token("profiles:read")
    parent = FastAPI()
    parent.mount("/inspector", create_app(stack.system.context, CookiePolicy("on")))
    async with stack.client(parent) as client:
        resp = await client.post("/inspector/login", data={"token": token})
        assert "secure" in resp.headers["set-cookie"].lower()
    with pytest.raises(SettingsError, match="PORTRAIT_INSPECTOR_SECURE_COOKIE"):
        load_settings({"PORTRAIT_INSPECTOR_SECURE_COOKIE": "yes"})
    assert load_settings({}).security.inspector_secure_cookie == "auto"
    with pytest.raises(SettingsError, match="PORTRAIT_INSPECTOR_SECURE_COOKIE"):
        CookiePolicy("yes")


async def test_profile_page_shows_the_profile_now(stack: Stack) -> None:
    async with logged_in(stack, "profiles:read") as client:
        resp = await client.get("/inspector/profile", params={"user": "ana"})
    assert resp.status_code == 200
    page = resp.text
    api = await stack.api("/v1/users/ana/profile")
    for tag in api["tags"]:
        assert f"<th scope=\"row\">{html.escape(tag['tag'])}</th>" in page
    for keyword in api["keywords"][:5]:
        assert html.escape(keyword["keyword"]) in page
    assert re.search(r'id="event-count">8<', page)
    assert "<dt>country</dt><dd>PT</dd>" in page and "<dt>rating</dt><dd>2</dd>" in page
    assert "Cooking Love" in page  # recent items by title
    # Personal data: not cached, and only this app's scripts may run.
    assert resp.headers["cache-control"] == "no-store"
    assert "script-src 'self'" in resp.headers["content-security-policy"]


async def test_timeline_travels_to_the_profile_as_of_an_event(stack: Stack) -> None:
    async with logged_in(stack, "profiles:read") as client:
        now = (await client.get("/inspector/timeline", params={"user": "ana"})).text
        past = (await client.get("/inspector/timeline", params={"user": "ana", "at": 2})).text
        swap = await client.get("/inspector/timeline", params={"user": "ana", "at": 2},
                                headers={"hx-request": "true"})
    for seq in range(1, 9):  # every event of the audit trail is listed
        assert f'data-seq="{seq}"' in now
    assert "Romance" in section(now, "asof")
    as_of = section(past, "asof")
    assert 'id="asof-seq">#2<' in as_of and re.search(r'id="event-count">2<', as_of)
    assert "Romance" not in as_of  # the romance films came later
    # The panel is the API's time travel (a replay of the log up to seq 2), not a guess.
    then = await stack.api("/v1/users/ana/profile", at_seq=2)
    assert then["tags"]
    for tag in then["tags"]:
        assert f"<th scope=\"row\">{tag['tag']}</th>" in as_of
    assert "▲ Sci-Fi" in as_of  # what event 2 changed
    # htmx gets the fragment it swaps in, not a page inside the page.
    assert swap.status_code == 200 and swap.text.lstrip().startswith('<div class="timeline"')
    assert "<html" not in swap.text and "vary" in swap.headers


async def test_changes_page_draws_each_rise_and_fall(stack: Stack) -> None:
    async with logged_in(stack, "profiles:read") as client:
        page = (await client.get("/inspector/changes", params={
            "user": "ana", "from_seq": 3, "to_seq": 8})).text
        default = await client.get("/inspector/changes", params={"user": "ana"})
        wrong = await client.get("/inspector/changes", params={
            "user": "ana", "from_seq": 8, "to_seq": 3})
    delta = await stack.api("/v1/users/ana/profile/changes", from_seq=3, to_seq=8, top=12)
    assert delta["rose"] and delta["fell"]
    chart = section(page, "changes-chart").split("</svg>")[0]
    assert chart.count('<g class="row rise">') == len(delta["rose"])
    assert chart.count('<g class="row fall">') == len(delta["fell"])
    for change in delta["rose"] + delta["fell"]:
        assert f">{html.escape(change['name'])} <tspan" in chart
    assert default.status_code == 200 and 'name="from_seq" min="0" max="8" value="4"' in (
        default.text)
    assert wrong.status_code == 422 and "from_seq" in wrong.text


async def test_recommendations_with_reasons_link_to_item_pages(stack: Stack) -> None:
    async with logged_in(stack, "recommendations:read") as client:
        page = (await client.get("/inspector/recommendations", params={"user": "ana"})).text
        item = await client.get("/inspector/item", params={"id": "m2", "user": "ana"})
        cold = (await client.get("/inspector/recommendations", params={"user": "newbie"})).text
    api = await stack.api("/v1/users/ana/recommendations", k=20)
    assert api["items"]
    for rec in api["items"]:
        assert f'href="/inspector/item?id={rec["item_id"]}&amp;user=ana"' in page
        assert html.escape(rec["title"]) in page
    reasons = [r for rec in api["items"] for r in rec["reasons"]]
    assert reasons and page.count("<li class=\"r-") == len(reasons)
    assert "cold-start" not in page and "cold-start" in cold
    assert item.status_code == 200
    assert '<h2 id="item-title">Galaxy Run</h2>' in item.text
    assert "a starship crew escapes" in item.text and '<span class="tag">Sci-Fi</span>' in item.text


async def test_scopes_decide_which_pages_open(stack: Stack) -> None:
    async with logged_in(stack, "recommendations:read") as client:
        profile = await client.get("/inspector/profile", params={"user": "ana"})
        timeline = await client.get("/inspector/timeline", params={"user": "ana"})
        assert (await client.get("/inspector/item", params={"id": "m1"})).status_code == 200
    assert profile.status_code == 403 and timeline.status_code == 403
    assert "profiles:read" in profile.text and "Ana" not in profile.text
    async with logged_in(stack, "profiles:read") as client:
        recs = await client.get("/inspector/recommendations", params={"user": "ana"})
        item = await client.get("/inspector/item", params={"id": "m1"})
    assert recs.status_code == 403 and item.status_code == 403
    assert "recommendations:read" in recs.text


async def test_a_revoked_token_is_refused_and_its_cookie_dropped(stack: Stack) -> None:
    name, token = await stack.token("profiles:read")
    async with stack.client() as client:
        assert (await client.post("/inspector/login", data={"token": token})).status_code == 303
        assert (await client.get("/inspector/profile?user=ana")).status_code == 200
        await stack.system.context.stores.tokens.revoke(name, time.time())
        resp = await client.get("/inspector/profile?user=ana")
        assert resp.status_code == 303 and "revoked" in resp.headers["location"]
        assert f'{COOKIE}=""' in resp.headers["set-cookie"]
        assert COOKIE not in client.cookies
        again = await client.post("/inspector/login", data={"token": token})
        assert again.status_code == 401 and "revoked" in again.text


async def test_unknown_users_and_items_get_a_clear_404_page(stack: Stack) -> None:
    async with logged_in(stack, "admin") as client:
        for page in ("profile", "timeline", "changes"):
            resp = await client.get(f"/inspector/{page}", params={"user": "nobody"})
            assert resp.status_code == 404, page
            assert "Not found" in resp.text and "nobody" in resp.text
        item = await client.get("/inspector/item", params={"id": "m404"})
        assert item.status_code == 404 and "m404" in item.text
        search = await client.get("/inspector/", params={"user": " ana "})
        assert search.status_code == 303
        assert search.headers["location"] == "/inspector/profile?user=ana"
        bad = await client.get("/inspector/", params={"user": "a\x00b"})
        assert bad.status_code == 422


async def test_hostile_text_stays_text(stack: Stack) -> None:
    async with logged_in(stack, "admin") as client:
        pages = [
            (await client.get("/inspector/timeline", params={"user": "ana"})).text,
            (await client.get("/inspector/profile", params={"user": HOSTILE_USER})).text,
            (await client.get("/inspector/timeline", params={"user": HOSTILE_USER})).text,
            (await client.get("/inspector/item", params={"id": "m7"})).text,
            (await client.get("/inspector/recommendations", params={"user": "ana"})).text,
            (await client.get("/inspector/profile", params={"user": SCRIPT})).text,  # 404 page
        ]
    for page in pages:
        assert "<script>alert" not in page
        assert "<img src=x" not in page and "<b onmouseover" not in page
        assert "<i>Tag" not in page
    assert str(markupsafe.escape(SCRIPT)) in pages[0]  # shown, as text
    assert "&lt;img src=x onerror=alert(1)&gt;" in pages[1]
    assert "&lt;b onmouseover=alert(1)&gt;Bold&lt;/b&gt;" in pages[3]


async def test_with_auth_off_the_pages_open_without_a_login() -> None:
    url = f"memory://inspector-{next(_names)}"
    system = auth.system(Settings(shards=1, auth=False), url,
                         ThreadedEncoder(HashingEncoder(dim=16)))
    try:
        transport = httpx.ASGITransport(app=system.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/v1/items", json={"items": ITEMS[:2]})).status_code == 200
            resp = await client.post("/v1/events", json={"events": ANA[1:3]})
            assert resp.status_code == 200
            page = await client.get("/inspector/profile", params={"user": "ana"})
            assert page.status_code == 200 and "Sci-Fi" in page.text
            assert "Log out" not in page.text
    finally:
        await system.close()
        forget_memory(url)
