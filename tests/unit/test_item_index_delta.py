"""An item index grown by deltas: rows appended after a shared base, changed items superseded."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.errors import InvalidField
from portrait.items import ItemIndex, l2_normalise
from portrait.ranking import TagTable


def _index() -> ItemIndex:
    rng = np.random.default_rng(0)
    return ItemIndex(["a", "b", "c"], l2_normalise(rng.normal(size=(3, 4))),
                     [("x",), ("y",), ()], model_id="m")


def test_extended_appends_rows_and_shares_the_base() -> None:
    base = _index()
    tail = l2_normalise(np.eye(4, dtype=np.float32)[:2])
    grown = base.extended(["d", "e"], tail, [("x", "z"), ()])
    assert grown.ids == ("a", "b", "c", "d", "e")
    assert grown.base_matrix is base.base_matrix  # not copied
    assert grown.row("d") == 3 and grown.row("a") == 0
    assert np.array_equal(grown.vectors([4, 0]), np.stack([tail[1], base.matrix[0]]))
    assert np.array_equal(grown.matrix, np.concatenate([base.matrix, tail]))
    assert grown.tags(3) == ("x", "z")
    assert grown.alive is not None and grown.alive.all()
    assert base.alive is None and len(base) == 3  # the original is unchanged


def test_a_changed_item_supersedes_its_old_row() -> None:
    base = _index()
    new_b = np.array([[1, 0, 0, 0]], dtype=np.float32)
    grown = base.extended(["b"], new_b, [("w",)])
    assert grown.row("b") == 3
    assert list(grown.rows_of(["a", "b", "zz"])) == [0, 3, -1]
    assert grown.alive is not None and list(grown.alive) == [True, False, True, True]
    again = grown.extended(["b"], new_b * 1.0, [()])  # changed once more: the tail row too
    assert again.row("b") == 4
    assert again.alive is not None and list(again.alive) == [True, False, True, False, True]


def test_extended_refuses_a_shape_that_does_not_match() -> None:
    with pytest.raises(InvalidField, match="matrix"):
        _index().extended(["d"], np.zeros((1, 5), np.float32), [()])
    with pytest.raises(InvalidField, match="ids"):
        _index().extended(["d", "d"], np.zeros((2, 4), np.float32), [(), ()])


def test_tag_table_extended_equals_a_table_built_whole() -> None:
    base = _index()
    grown = base.extended(["d", "e"], np.zeros((2, 4), np.float32), [("x", "z"), ()])
    table = TagTable(base).extended([("x", "z"), ()])
    whole = TagTable(grown)
    weights = {"x": 1.0, "z": 0.5, "y": -0.25}
    assert np.allclose(table.affinity(weights), whole.affinity(weights))
    assert np.array_equal(table.mask(["z"]), whole.mask(["z"]))
    assert np.array_equal(table.per_item_counts(), whole.per_item_counts())
