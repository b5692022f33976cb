"""The one shape in which a long computation says how far it is.

Co-occurrence blocks of a retrain, catalog chunks of an import, users of a replay, trials of a
search and epochs of a training all report through :class:`Progress`, so one progress bar
adapter (:func:`on_bar`) fits every one of them. Pure: it draws nothing itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol


class Progress(Protocol):
    """Called as work advances: ``done`` of ``total`` steps so far.

    ``total`` may change between calls (a search that drops candidates has fewer steps left).
    ``figures`` are numbers worth showing beside a bar, named by the computation: a training's
    ``loss``, a search's ``last`` and ``best`` objective. A callback that shows none accepts
    and ignores them.
    """

    def __call__(self, done: int, total: int, /, **figures: float) -> None: ...


class Bar(Protocol):
    """What :func:`on_bar` needs of a progress bar (tqdm's names)."""

    total: float | None
    n: float

    def set_postfix(self, ordered_dict: Mapping[str, str], refresh: bool = True) -> None: ...

    def refresh(self) -> None: ...


def on_bar(bar: Bar) -> Progress:
    """A :class:`Progress` that moves ``bar`` to ``done`` of ``total`` and shows the figures
    beside it."""

    def progress(done: int, total: int, /, **figures: float) -> None:
        bar.total = total
        bar.n = done
        if figures:
            bar.set_postfix({name: f"{value:.4f}" for name, value in figures.items()}, False)
        bar.refresh()

    return progress
