"""The HTTP ingress as a Ray Serve deployment: it serves :func:`serve.api.routes.create_app`.

The deployment builds nothing itself: it is bound with a context builder from the
composition root (:mod:`serve.composition`) and its arguments, calls it in the replica
process, and serves the routes over the context it returns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from ray import serve

from serve.api.context import ApiContext
from serve.api.routes import create_app


@serve.deployment(max_ongoing_requests=256)
@serve.ingress()
class PortraitIngress:
    """Routes HTTP calls to the ProfileShard actors and the catalog."""

    def __init__(self, build_context: Callable[..., ApiContext], *args: Any) -> None:
        self._context = build_context(*args)

    def __serve_build_asgi_app__(self) -> FastAPI:
        # Late-bound app (Serve >= 2.5x): built in the replica, around this replica's context.
        return create_app(self._context)
