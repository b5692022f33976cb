"""Async SQLAlchemy engines for Portrait's Postgres store (asyncpg driver)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

_ASYNC_DRIVER = "postgresql+asyncpg"
# Schemes that mean "Postgres, driver unspecified"; both are seen in DATABASE_URL variables.
_PLAIN_SCHEMES = ("postgresql", "postgres")


def async_url(url: str) -> str:
    """``url`` with its scheme set to ``postgresql+asyncpg``.

    Accepts ``postgresql://``, ``postgres://`` and ``postgresql+asyncpg://`` URLs.

    Raises:
        ValueError: for any other scheme (another driver would silently not be async).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a database URL: {url!r}")
    if scheme in _PLAIN_SCHEMES:
        return f"{_ASYNC_DRIVER}://{rest}"
    if scheme == _ASYNC_DRIVER:
        return url
    raise ValueError(f"unsupported database URL scheme {scheme!r}; use postgresql://")


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    connect_timeout: float = 5.0,
    statement_timeout_s: float = 60.0,
    lock_timeout_s: float = 10.0,
    idle_in_transaction_timeout_s: float = 60.0,
    **kwargs: Any,
) -> AsyncEngine:
    """An :class:`AsyncEngine` on the asyncpg driver.

    Args:
        url: a ``postgresql://`` or ``postgresql+asyncpg://`` URL. A unix socket directory
            goes in the query: ``postgresql://user@/db?host=/run/postgresql``.
        pool_size: connections kept open. Writers serialise on one advisory lock, so more
            connections than a few per CPU only queue inside Postgres.
        max_overflow: extra connections opened under bursts and closed when returned.
        connect_timeout: seconds before a connection attempt counts as failed (and, through
            :mod:`storage.retry`, as transient).
        statement_timeout_s, lock_timeout_s, idle_in_transaction_timeout_s: the session's
            Postgres limits (0 = none). Every writer takes one advisory lock, so without them
            one stuck statement or abandoned transaction stalls all ingest: a lock wait past
            ``lock_timeout_s`` fails (SQLSTATE 55P03, retried, then 503) instead of queueing
            for ever, and a session idle inside a transaction is ended, releasing the lock.
            The longest statements (a page of 10,000 events, popularity counts) take seconds.
        **kwargs: passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`.
    """
    connect_args: dict[str, Any] = {
        "timeout": connect_timeout,
        "server_settings": {
            "application_name": "portrait",
            # The queries are short OLTP statements; JIT compilation of a large replay scan
            # costs tens of milliseconds and never pays back.
            "jit": "off",
            "statement_timeout": _ms(statement_timeout_s),
            "lock_timeout": _ms(lock_timeout_s),
            "idle_in_transaction_session_timeout": _ms(idle_in_transaction_timeout_s),
        },
    }
    connect_args.update(kwargs.pop("connect_args", {}))
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        # No pre-ping: it costs a round trip per checkout on the hot path, and a dead pooled
        # connection surfaces as a disconnect that storage.retry retries on a fresh one.
        pool_pre_ping=False,
        pool_recycle=1800,
        # Driver errors quote the statement; without this they also quote its parameters
        # (other users' ids and payloads) into logs and exception messages.
        hide_parameters=True,
        connect_args=connect_args,
        **kwargs,
    )


__all__ = ["async_url", "create_engine"]


def _ms(seconds: float) -> str:
    """A Postgres duration setting in milliseconds (``"0"`` disables it)."""
    if seconds < 0:
        raise ValueError("timeouts must be >= 0")
    return str(int(round(seconds * 1000)))
