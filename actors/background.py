"""The background loops of the control plane: retried until they succeed, stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

_log = logging.getLogger(__name__)


async def retry_until_done(attempt: Callable[[], Awaitable[None]], what: str) -> None:
    """Run ``attempt`` until it returns, backing off from 0.5 to 10 s between failures (the
    encoder is still away: it loads for about 50 s on CPU)."""
    delay = 0.5
    while True:
        try:
            await attempt()
            return
        except Exception as exc:
            _log.info("%s not yet (%s); retrying in %.1f s", what, type(exc).__name__, delay)
            await asyncio.sleep(delay)
            delay = min(10.0, delay * 2)


async def stop_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel ``tasks`` and wait for each to finish."""
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
