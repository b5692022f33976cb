"""The inspector in a real headless Chromium (Debian's package, driven by Playwright), over the
in-process system served by uvicorn on 127.0.0.1: log in, search a user, travel back in the
timeline, read the chart, the recommendations and an item, open /docs; no request may leave
127.0.0.1 and no page may log an error (a blocked script or style shows up as one).

With ``PORTRAIT_INSPECTOR_SCREENSHOTS=DIR`` it also saves the pages as PNGs in DIR
(docs/inspector/ holds the committed ones).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from actors.text_features import ThreadedEncoder
from serve.settings import Settings
from storage.stores import forget_memory
from tests import auth
from tests.fakes import HashingEncoder
from tests.inspector import scene
from tests.live_server import serving

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="no /usr/bin/chromium (apt-get install chromium; .ci/run installs it)",
)
LOCAL_SCHEMES = ("data", "blob", "about")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[str, str]]:
    """(base URL, admin token) of a loopback server holding the MovieLens scene."""
    url = "memory://inspector-browser"
    system = auth.system(Settings(shards=2), url, ThreadedEncoder(HashingEncoder(dim=64)))
    items, events = scene.build()
    try:
        with serving(system) as (base, headers):
            with httpx.Client(base_url=base, headers=headers, timeout=60) as api:
                assert api.post("/v1/items", json={"items": items}).status_code == 200
                for i in range(0, len(events), 500):
                    resp = api.post("/v1/events", json={"events": events[i:i + 500]})
                    assert resp.status_code == 200, resp.text
            yield base, headers["authorization"].removeprefix("Bearer ")
    finally:
        forget_memory(url)


def test_the_inspector_in_a_browser(served: tuple[str, str]) -> None:
    from playwright.sync_api import sync_playwright

    base, token = served
    shots = os.environ.get("PORTRAIT_INSPECTOR_SCREENSHOTS")
    shot_dir = Path(shots) if shots else None
    if shot_dir is not None:
        shot_dir.mkdir(parents=True, exist_ok=True)
    requested: list[str] = []
    outside: list[str] = []
    problems: list[str] = []

    def screenshot(page: object, name: str) -> None:
        if shot_dir is not None:
            page.screenshot(path=str(shot_dir / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM),
                                     args=["--headless", "--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})

        def gate(route: object) -> None:
            # Every request the pages make is recorded; one to any other host is refused
            # before it leaves, and fails the test below.
            request_url = route.request.url  # type: ignore[attr-defined]
            requested.append(request_url)
            parts = urlsplit(request_url)
            if parts.scheme in LOCAL_SCHEMES or parts.hostname == "127.0.0.1":
                route.continue_()  # type: ignore[attr-defined]
            else:
                outside.append(request_url)
                route.abort()  # type: ignore[attr-defined]

        context.route("**/*", gate)
        page = context.new_page()
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        # Not logged in: the login form, which brings us back where we wanted to go.
        page.goto(f"{base}/inspector/")
        assert "/inspector/login" in page.url
        page.fill("#token", token)
        page.click("form[action='/inspector/login'] button")
        page.wait_for_url(f"{base}/inspector/")

        # Search the user; the profile now.
        page.fill("#find-user", scene.USER)
        page.click("#find-user ~ button")
        page.wait_for_url(re.compile(r"/inspector/profile\?user=536$"))
        assert page.text_content("#user-id") == scene.USER
        tags = page.locator("#profile .weights").first.inner_text()
        assert "Drama" in tags and "Thriller" in tags
        assert page.text_content("#event-count") == "33"
        screenshot(page, "profile")

        # The timeline: clicking an event swaps in the profile as of it (htmx, no reload).
        page.click("nav.tabs >> text=Timeline")
        page.wait_for_selector("#timeline")
        now = page.inner_text("#asof")
        page.evaluate("window.notReloaded = true")
        page.click('a.seq[data-seq="4"]')
        page.wait_for_selector("#asof-seq")
        assert page.text_content("#asof-seq") == "#4"
        assert page.text_content("#asof #event-count") == "4"
        assert page.inner_text("#asof") != now
        assert "at=4" in page.url  # the address bar follows, so the view can be shared
        assert page.evaluate("window.notReloaded") is True
        assert page.get_attribute('li.selected a.seq', "data-seq") == "4"
        screenshot(page, "timeline")

        # Rises and falls: the chart is server-drawn SVG with a bar per moved interest.
        page.click("nav.tabs >> text=Rises & falls")
        page.wait_for_selector("svg#changes-chart")
        assert page.locator("svg#changes-chart rect.bar").count() >= 2
        assert page.locator("svg#changes-chart g.rise").count() >= 1
        page.fill("input[name=from_seq]", "10")
        page.click("form.between button")
        page.wait_for_url(re.compile(r"from_seq=10"))  # (a string predicate is eval: CSP)
        assert page.locator("svg#changes-chart rect.bar").count() >= 1
        screenshot(page, "changes")

        # Recommendations and their reasons; an item page from there.
        page.click("nav.tabs >> text=Recommendations")
        page.wait_for_selector("ol.recs")
        assert page.locator("ol.recs > li").count() == 20
        assert page.locator("ol.recs .reasons li").count() >= 20
        screenshot(page, "recommendations")
        first = page.locator("ol.recs a.title").first
        title = first.inner_text()
        first.click()
        page.wait_for_selector("#item-title")
        assert page.text_content("#item-title") == title
        assert page.locator("#item .tag").count() >= 1
        screenshot(page, "item")
        assert not problems, problems

        # The API documentation renders from the service alone.
        page.goto(f"{base}/docs")
        page.wait_for_selector(".swagger-ui .info .title", timeout=20_000)
        assert "Portrait" in page.inner_text(".swagger-ui .info .title")
        assert page.locator(".opblock").count() >= 10

        browser.close()
    assert any("/inspector/static/htmx.min.js" in u for u in requested)
    assert any("/docs/assets/swagger-ui-bundle.js" in u for u in requested)
    assert not outside, f"requests outside 127.0.0.1: {outside}"
