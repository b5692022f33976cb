"""The background retrain as the API drives it: note events, retrain when due, publish.

:class:`ItemSpaceJob` runs in the process that owns it: the in-process system's, or the
:class:`ItemSpaceActor` Ray actor's. Publishing is a callable it is given (rebuild the
catalog view in the new space and tell every shard).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from actors.item_space_trainer import ItemSpaceTrainer

_log = logging.getLogger(__name__)


class ItemSpaceJob:
    """The :class:`serve.api.context.Retraining` port over a trainer and a publisher."""

    def __init__(
        self, trainer: ItemSpaceTrainer, publish: Callable[[], Awaitable[object]],
        check_interval_s: float = 30.0,
    ) -> None:
        self._trainer = trainer
        self._publish = publish
        self._interval = check_interval_s
        self._background: asyncio.Task[Any] | None = None
        self._timer: asyncio.Task[None] | None = None

    async def note_events(self, count: int) -> None:
        self._trainer.note_events(count)
        self._start_if_due()
        if self._timer is None:  # the age trigger needs a clock ticking without traffic
            self._timer = asyncio.get_running_loop().create_task(self._tick())

    async def retrain(self, *, fresh: bool = True) -> dict[str, Any]:
        """Retrain (see :meth:`ItemSpaceTrainer.retrain` for ``fresh``) and publish."""
        space = await self._trainer.retrain(fresh=fresh)
        if space is not None:
            await self._publish()
        return await self.stats()

    async def stats(self) -> dict[str, Any]:
        return dataclasses.asdict(self._trainer.stats)

    async def close(self) -> None:
        for task in (self._timer, self._background):
            if task is not None:
                task.cancel()

    def _start_if_due(self) -> None:
        if self._trainer.due() and (self._background is None or self._background.done()):
            self._background = asyncio.get_running_loop().create_task(self._retrain_logged())

    async def _retrain_logged(self) -> None:
        try:
            await self.retrain(fresh=False)
        except Exception:  # publishing failed; the next trigger retries
            _log.exception("publishing a retrained item space failed")

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self._start_if_due()


