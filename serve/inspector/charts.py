"""Geometry of the inspector's charts, drawn as inline SVG by the templates.

Only numbers are computed here; names reach the page through the templates, which escape
them. No chart library and no script: the chart is in the HTML the server sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Bar:
    """One interest's move: a bar from the zero line, right for a rise, left for a fall."""

    kind: str  # "tag" or "keyword"
    name: str
    before: float
    after: float
    delta: float
    y: float
    x: float  # left edge
    width: float
    label_x: float  # where the value is written, outside the bar's end
    label_anchor: str  # "start" (rise) or "end" (fall)

    @property
    def rising(self) -> bool:
        return self.delta > 0


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    value: float


@dataclass(frozen=True, slots=True)
class DivergingChart:
    width: int
    height: int
    zero_x: float
    top: float
    row: int
    label_width: int
    bars: tuple[Bar, ...]
    ticks: tuple[Tick, ...]


def diverging(
    rose: Sequence[Mapping[str, Any]],
    fell: Sequence[Mapping[str, Any]],
    *,
    width: int = 760,
    row: int = 26,
    label_width: int = 210,
) -> DivergingChart:
    """Rises above falls, each largest first, on one scale centred on zero.

    ``rose``/``fell`` are the ``changes`` response's lists (``kind``, ``name``, ``before``,
    ``after``, ``delta``). The scale is the largest move, so the longest bar fills its half.
    """
    top, margin = 24.0, 56.0  # room for the tick labels; room for a value beside a bar
    moves = [*rose, *fell]
    largest = max((abs(float(c["delta"])) for c in moves), default=0.0)
    half = (width - label_width - 2 * margin) / 2
    zero_x = label_width + margin + half
    scale = half / largest if largest > 0 else 0.0
    bars = []
    for i, change in enumerate(moves):
        delta = float(change["delta"])
        length = abs(delta) * scale
        y = top + i * row
        if delta > 0:
            x, label_x, anchor = zero_x, zero_x + length + 4, "start"
        else:
            x, label_x, anchor = zero_x - length, zero_x - length - 4, "end"
        bars.append(Bar(str(change["kind"]), str(change["name"]), float(change["before"]),
                        float(change["after"]), delta, y, x, max(length, 1.0), label_x,
                        anchor))
    ticks = tuple(
        Tick(zero_x + f * half, f * largest) for f in (-1.0, -0.5, 0.0, 0.5, 1.0)
    ) if largest > 0 else ()
    height = int(top + max(len(bars), 1) * row + 8)
    return DivergingChart(width, height, zero_x, top, row, label_width, tuple(bars), ticks)


def meter(value: float, largest: float, width: int = 120) -> float:
    """The length of a weight's bar in a list scaled to its ``largest`` entry."""
    if largest <= 0:
        return 0.0
    return max(1.0, min(1.0, abs(value) / largest) * width)
