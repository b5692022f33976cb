"""Driver errors -> Portrait's error tree, with bounded retries of transient failures.

Every storage adapter call runs through :meth:`RetryPolicy.run`, which maps what asyncpg and
SQLAlchemy raise onto :mod:`portrait.errors`, looking along the exception's ``orig`` /
``__cause__`` / ``__context__`` chain:

* **transient** - retried with bounded exponential backoff, then ``StorageUnavailable``:

  - ``OSError`` (connection refused or reset, DNS) and ``TimeoutError``;
  - SQLAlchemy ``OperationalError``, ``InterfaceError``, pool ``TimeoutError``, and any
    ``DBAPIError`` with ``connection_invalidated``;
  - asyncpg ``InterfaceError`` (connection closed), ``ConnectionDoesNotExistError`` and all
    of SQLSTATE class 08, ``CannotConnectNowError`` and the other shutdowns (57P01-57P03),
    too many connections (53300), serialization failure (40001), deadlock (40P01), lock
    timeout (55P03), statement timeout (57014; the server is overloaded, a 503 to the client).

* ``StorageIntegrityError`` - SQLAlchemy ``IntegrityError`` / SQLSTATE class 23 that the
  adapter did not anticipate (it checks event_ids and versions itself, under a lock), and
  stored payloads that do not decode (see :mod:`storage.postgres`).
* ``StorageError`` - any other driver error: a missing table, a syntax error (a deployment
  or code bug, not worth retrying).
* passed through at once, never retried - :class:`portrait.errors.PortraitError`
  (``VersionConflict``, ``EventIdConflict``, ``InvalidInput``...).
* propagates unchanged - anything else (``TypeError``..., cancellation).

Retrying is only safe because every operation passed to :meth:`RetryPolicy.run` is one whole
transaction, and appends are idempotent by event_id: if a commit succeeded but its
acknowledgement was lost, the retried append finds its own events recorded and returns them
with ``duplicate=True``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.errors import (
    PortraitError,
    StorageError,
    StorageIntegrityError,
    StorageUnavailable,
)

_log = logging.getLogger(__name__)

T = TypeVar("T")

_TRANSIENT_SQLSTATES = frozenset(
    {"40001", "40P01", "53300", "55P03", "57014", "57P01", "57P02", "57P03"}
)
_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    # A connection whose server end was killed mid-statement can be left mid-protocol:
    # asyncpg then refuses it ("another operation is in progress"). Retry on a fresh one.
    asyncpg.InternalClientError,
    asyncpg.SerializationError,
    asyncpg.DeadlockDetectedError,
)
_INTEGRITY_TYPES: tuple[type[BaseException], ...] = (
    sa_exc.IntegrityError,
    asyncpg.IntegrityConstraintViolationError,
)
_DRIVER_TYPES: tuple[type[BaseException], ...] = (sa_exc.SQLAlchemyError, asyncpg.PostgresError)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: SQLAlchemy's ``orig``, then causes and contexts."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([current.__context__, current.__cause__, getattr(current, "orig", None)])


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying: the connection or the transaction failed, not us."""
    for link in _chain(exc):
        if isinstance(link, _TRANSIENT_TYPES):
            return True
        if isinstance(link, sa_exc.DBAPIError) and link.connection_invalidated:
            return True
        state = _sqlstate(link)
        if state is not None and (state.startswith("08") or state in _TRANSIENT_SQLSTATES):
            return True
    return False


_SHUTDOWN_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})


def is_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` says the connection itself is gone (closed, reset, server shut down),
    so it must not be used again. A timeout is not: the connection survives it."""
    for link in _chain(exc):
        if isinstance(link, TimeoutError):
            continue
        if isinstance(link, (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError,
                             asyncpg.CannotConnectNowError, asyncpg.InternalClientError)):
            return True
        state = _sqlstate(link)
        if state is not None and (state.startswith("08") or state in _SHUTDOWN_SQLSTATES):
            return True
    return False


def is_integrity(exc: BaseException) -> bool:
    """Whether ``exc`` is a constraint violation (SQLSTATE class 23)."""
    for link in _chain(exc):
        if isinstance(link, _INTEGRITY_TYPES):
            return True
        state = _sqlstate(link)
        if state is not None and state.startswith("23"):
            return True
    return False


def translate(exc: Exception) -> Exception:
    """The Portrait error for a non-transient ``exc`` (``exc`` itself if it is not a driver's)."""
    if isinstance(exc, PortraitError):
        return exc
    if is_integrity(exc):
        return StorageIntegrityError(f"the store refused a write: {exc}")
    if isinstance(exc, _DRIVER_TYPES):
        return StorageError(f"the store failed: {exc}")
    return exc


@dataclass(slots=True)
class RetryCounts:
    """What the retry policies of this process saw (exported by the shard as metrics).

    Attributes:
        retries: transient failures that were retried.
        unavailable: operations that failed transiently on every attempt (StorageUnavailable).
        failures: non-transient driver failures (StorageError, StorageIntegrityError).
    """

    retries: int = 0
    unavailable: int = 0
    failures: int = 0


COUNTS = RetryCounts()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded exponential backoff for transient storage failures.

    Attributes:
        attempts: tries in all, the first included.
        base_delay: seconds before the second try; doubled for each further one.
        max_delay: cap on any single delay.
    """

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be non-negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number ``attempt`` (1-based), jittered."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        # Jitter keeps writers that failed together from retrying in lock-step.
        return random.uniform(ceiling / 2, ceiling)

    async def run(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await ``operation()``, retrying transient failures; translate the final error.

        ``operation`` must be a whole transaction: it is started afresh on each try.

        Raises:
            StorageUnavailable: a transient failure outlived the last attempt.
            StorageIntegrityError, StorageError: see the module docstring.
            PortraitError: whatever ``operation`` raised on purpose, at once.
        """
        for attempt in range(1, self.attempts + 1):
            try:
                return await operation()
            except PortraitError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    translated = translate(exc)
                    if translated is exc:
                        raise
                    COUNTS.failures += 1
                    raise translated from exc
                if attempt == self.attempts:
                    COUNTS.unavailable += 1
                    raise StorageUnavailable(
                        f"the store is unavailable after {attempt} attempts: {exc}"
                    ) from exc
                COUNTS.retries += 1
                wait = self.delay(attempt)
                _log.warning("transient storage error (try %d, retry in %.3fs): %r",
                             attempt, wait, exc)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def fetch_all(self, engine: AsyncEngine, query: Any) -> list[Any]:
        """Every row of ``query`` on a fresh connection, retried as :meth:`run` does."""
        async def read() -> list[Any]:
            async with engine.connect() as conn:
                return list((await conn.execute(query)).all())

        return await self.run(read)


DEFAULT_RETRY = RetryPolicy()

__all__ = [
    "COUNTS", "DEFAULT_RETRY", "RetryCounts", "RetryPolicy", "is_integrity", "is_transient",
    "translate",
]
