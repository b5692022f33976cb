"""Who is looking: the inspector's login cookie, checked like a bearer token.

A browser cannot add an ``Authorization`` header to a navigation, so the inspector keeps the
API token the person pasted into its login form in a cookie and checks it on every page with
the service's own :class:`~serve.api.auth.Authenticator` and scopes: a revoked token stops
working within ``PORTRAIT_TOKEN_CACHE_S``, a token without ``profiles:read`` sees no profile.

The cookie is ``HttpOnly`` (page scripts cannot read it), ``SameSite=Strict`` (no other site
can make the browser send it, which is the CSRF defence of the read-only pages) and scoped to
the inspector's path, so it never reaches ``/v1``: the API stays bearer-only. ``Secure`` is set
per ``PORTRAIT_INSPECTOR_SECURE_COOKIE``: ``auto`` (the default) when the login came over
https, ``on`` always (behind a TLS-terminating proxy), ``off`` never.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, Request

from portrait.errors import Unauthenticated
from serve.api.context import ApiContext
from serve.settings import SettingsError

COOKIE = "portrait_inspector"
SECURE_VARIABLE = "PORTRAIT_INSPECTOR_SECURE_COOKIE"
_SECURE_CHOICES = ("auto", "on", "off")


@dataclass(frozen=True)
class CookiePolicy:
    """When the login cookie gets the ``Secure`` flag: ``auto``, ``on`` or ``off``."""

    secure: str = "auto"

    def __post_init__(self) -> None:
        if self.secure not in _SECURE_CHOICES:
            raise SettingsError(f"{SECURE_VARIABLE}: {self.secure!r} is not one of "
                                f"{', '.join(_SECURE_CHOICES)}")

    def secure_for(self, request: Request) -> bool:
        if self.secure == "auto":
            return request.url.scheme == "https"
        return self.secure == "on"


class LoginRequired(Exception):
    """No usable login cookie: the page answers with the login form (see routes)."""

    def __init__(self, reason: str | None, *, clear: bool = False) -> None:
        super().__init__(reason or "log in")
        self.reason = reason
        self.clear = clear  # the cookie holds a token that no longer works: drop it


class CrossSiteForm(Exception):
    """A form post that did not come from the inspector's own pages."""


def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.portrait
    return ctx


def base_path(request: Request) -> str:
    """Where the inspector is mounted (``/inspector``, behind any proxy prefix)."""
    return str(request.scope.get("root_path", ""))


async def check_token(request: Request, token: str, scope: str | None) -> None:
    """Raises Unauthenticated (401), Forbidden (403) or RateLimited (429) like the API."""
    auth = context(request).auth
    if auth is not None:
        await auth.check(f"Bearer {token}", scope)


def viewer(scope: str | None) -> Any:
    """A route dependency: the login cookie's token must allow ``scope`` (None: any valid
    token). Nothing is checked when the service runs with ``PORTRAIT_AUTH=off``, as for the
    API."""

    async def dependency(request: Request) -> None:
        if context(request).auth is None:
            return
        token = request.cookies.get(COOKIE)
        if not token:
            raise LoginRequired(None)
        try:
            await check_token(request, token, scope)
        except Unauthenticated as exc:  # revoked, or the key changed: log in again
            raise LoginRequired(str(exc), clear=True) from None

    return Depends(dependency)


def same_origin_form(request: Request) -> None:
    """Refuse a form post made by another site (login CSRF: signing a victim in with the
    attacker's token). Browsers send ``Sec-Fetch-Site`` and, on posts, ``Origin``; a client
    that sends neither is not a browser acting for someone else."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise CrossSiteForm(site)
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise CrossSiteForm(origin)


def safe_next(base: str, target: str | None) -> str:
    """Where to go after logging in: a page of the inspector, never another site."""
    home = f"{base}/"
    if not target or not target.startswith(home) or "\\" in target:
        return home
    if any(ord(c) < 0x20 for c in target):
        return home
    return target
