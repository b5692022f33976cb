"""The blended item space composed when read equals the materialised blend, grows with
deltas without copying, and keeps a covered item's collaborative part across a change."""

from __future__ import annotations

import numpy as np

from portrait.blended import blended_index
from portrait.collaborative import combine
from portrait.item_space import CollabSettings, ItemSpace
from portrait.items import ItemIndex, l2_normalise


def _setup() -> tuple[ItemIndex, ItemSpace]:
    rng = np.random.default_rng(1)
    text = ItemIndex([f"i{k}" for k in range(6)], l2_normalise(rng.normal(size=(6, 8))),
                     [("a",)] * 6, model_id="m")
    space = ItemSpace(3, ("i4", "i1", "gone"), l2_normalise(rng.normal(size=(3, 4))), 10, 10,
                      CollabSettings())
    return text, space


def _materialised(text: ItemIndex, space: ItemSpace, alpha: float) -> np.ndarray:
    collab = np.zeros((len(text), 4), np.float32)
    for j, item_id in enumerate(space.item_ids):
        row = text.row(item_id)
        if row is not None:
            collab[row] = space.vectors[j]
    return combine(text.matrix, collab, alpha)


def test_composed_rows_equal_the_materialised_blend() -> None:
    text, space = _setup()
    lazy = blended_index(text, space, 0.3)
    want = _materialised(text, space, 0.3)
    np.testing.assert_allclose(lazy.matrix, want, atol=1e-6)
    np.testing.assert_allclose(lazy.vectors([4, 0, 1]), want[[4, 0, 1]], atol=1e-6)
    assert lazy.dim == 12 and lazy.text_dim == 8 and lazy.space_version == 3
    assert lazy.ids is text.ids and lazy.row("i4") == 4


def test_a_delta_grows_the_blend_and_a_changed_item_keeps_its_collab_part() -> None:
    text, space = _setup()
    lazy = blended_index(text, space, 0.5)
    new = l2_normalise(np.random.default_rng(2).normal(size=(2, 8)))
    grown_text = text.extended(["i1", "new"], new, [("b",), ()])
    grown = lazy.over(grown_text)
    assert grown.text is grown_text and len(grown) == 8
    assert grown.alive is not None and not grown.alive[1]  # i1's old row
    rows = grown.vectors([grown.row("i1"), grown.row("new")])
    np.testing.assert_allclose(rows[0, :8], new[0] * np.sqrt(0.5), atol=1e-6)  # covered
    np.testing.assert_allclose(rows[0, 8:], space.vectors[1] * np.sqrt(0.5), atol=1e-6)
    np.testing.assert_allclose(rows[1], np.concatenate([new[1], np.zeros(4)]), atol=1e-6)
    np.testing.assert_allclose(lazy.extended(["i1", "new"], new, [("b",), ()]).matrix,
                               grown.matrix)
