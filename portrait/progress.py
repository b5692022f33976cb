"""The one shape in which a long computation says how far it is.

Co-occurrence blocks of a retrain, catalog chunks of an import, users of a replay, trials of a
search and epochs of a training all report through :class:`Progress`, so one progress bar
adapter (:func:`on_bar`) fits every one of them. Pure: it draws nothing itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def stage_bars(new_bar: Callable[[str, int], Bar]) -> Callable[[str, int, int], None]:
    """A ``(stage, done, total)`` callback (a computation in named stages, such as the
    epochs of :func:`encoding.fine_tune.fine_tune`) drawing one bar per stage through
    :func:`on_bar`; ``new_bar(stage, total)`` makes each, and a finished stage's bar is closed
    when it has a ``close``."""
    bars: dict[str, tuple[Bar, Progress]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        if stage not in bars:
            bar = new_bar(stage, total)
            bars[stage] = (bar, on_bar(bar))
        bar, advance = bars[stage]
        advance(done, total)
        if done >= total and callable(close := getattr(bar, "close", None)):
            close()

    return progress
