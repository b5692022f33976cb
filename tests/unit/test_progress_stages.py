"""stage_bars: one bar per named stage, moved through on_bar, closed when its stage ends."""

from __future__ import annotations

from collections.abc import Mapping

from portrait.progress import stage_bars


class FakeBar:
    def __init__(self, stage: str, total: int) -> None:
        self.stage, self.n, self.closed = stage, 0.0, False
        self.total: float | None = float(total)

    def set_postfix(self, ordered_dict: Mapping[str, str], refresh: bool = True) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_one_bar_per_stage_closed_when_done() -> None:
    made: list[FakeBar] = []

    def new_bar(stage: str, total: int) -> FakeBar:
        made.append(FakeBar(stage, total))
        return made[-1]

    progress = stage_bars(new_bar)
    progress("epoch 1", 0, 3)
    progress("epoch 1", 2, 3)
    assert [(b.stage, b.n, b.closed) for b in made] == [("epoch 1", 2, False)]
    progress("epoch 1", 3, 3)
    progress("epoch 2", 1, 3)
    assert [(b.stage, b.n, b.closed) for b in made] == [("epoch 1", 3, True),
                                                         ("epoch 2", 1, False)]
