"""Item spaces: the text part's width, the version label, and row look-ups."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.errors import InvalidField
from portrait.items import ItemIndex, l2_normalise


def matrix(n: int = 3, dim: int = 6) -> np.ndarray:
    return l2_normalise(np.random.default_rng(0).normal(size=(n, dim)))


def test_a_text_only_space_is_all_text_part() -> None:
    items = ItemIndex(["a", "b", "c"], matrix())
    assert items.text_dim == items.dim == 6
    assert items.space_version == "text"


def test_a_blended_space_names_its_text_part_and_version() -> None:
    items = ItemIndex(["a", "b", "c"], matrix(), text_dim=4, space_version=7)
    assert (items.text_dim, items.dim, items.space_version) == (4, 6, 7)
    assert ItemIndex(["a", "b", "c"], matrix(), text_dim=4).space_version == "text+collab"


@pytest.mark.parametrize("text_dim", [0, 7])
def test_text_dim_must_fit_the_matrix(text_dim: int) -> None:
    with pytest.raises(InvalidField) as err:
        ItemIndex(["a", "b", "c"], matrix(), text_dim=text_dim)
    assert err.value.field == "text_dim"


def test_rows_of_marks_missing_ids() -> None:
    items = ItemIndex(["a", "b", "c"], matrix())
    rows = items.rows_of(["c", "zz", "a"])
    assert rows.dtype == np.int64 and rows.tolist() == [2, -1, 0]
    assert items.rows_of([]).shape == (0,)
