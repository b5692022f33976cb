"""A catalog in a trained item space: the blend the evaluation uses, new items by text."""

from __future__ import annotations

import numpy as np

from portrait.collaborative import blended_index, combine
from portrait.item_space import CollabSettings, ItemSpace
from portrait.items import ItemIndex, l2_normalise


def test_blend_matches_combine_and_new_items_keep_their_text_vector() -> None:
    rng = np.random.default_rng(0)
    text = ItemIndex(["a", "b", "new"], l2_normalise(rng.normal(size=(3, 5))), [("x",), (), ()])
    collab = l2_normalise(rng.normal(size=(3, 4)))
    # "gone" is in the space but no longer in the catalog: ignored.
    space = ItemSpace(7, ("b", "gone", "a"), collab, 10, 20, CollabSettings(dim=4))
    blended = blended_index(text, space, 0.8)
    aligned = np.vstack([collab[2], collab[0], np.zeros(4)])
    assert np.allclose(blended.matrix, combine(text.matrix, aligned, 0.8))
    assert blended.ids == text.ids and blended.tags(0) == ("x",)
    assert (blended.text_dim, blended.dim, blended.space_version) == (5, 9, 7)
    # The new item scores by its text alone: its row is [text, 0].
    assert np.allclose(blended.matrix[2, :5], text.matrix[2]) and not blended.matrix[2, 5:].any()
