"""The profile inspector: HTML pages at ``/inspector`` for looking at one user's profile, its
history and recommendations, and the catalog, with the API's tokens and scopes."""

from serve.inspector.routes import create_app

__all__ = ["create_app"]
