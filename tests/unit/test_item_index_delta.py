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
    assert tuple(grown.ids) == ("a", "b", "c", "d", "e")
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


def test_the_learned_ranker_ranks_over_a_catalog_grown_by_a_delta() -> None:
    """A delta adds rows the ranker's neighbour lists do not cover: the new item is scored
    (without lists until the next retrain), a changed item's old row is never shown."""
    from portrait.config import ProfileConfig
    from portrait.events import ItemViewed
    from portrait.fold import fold
    from portrait.profile import ProfileState
    from portrait.ranker_training import train_bundle
    from portrait.ranking import RankingConfig
    from portrait.retrieval import RetrievalContext
    from portrait.two_stage import recommend_learned
    from tests.unit.builders import recorded
    from tests.unit.test_two_stage import ITEMS, PROFILE, RANKING, SETTINGS, T0, TAGS, walks

    bundle = train_bundle(walks(), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    ranker = bundle.bind(ITEMS)
    # i12's new version (the walk's next item after i11) and a new item just like it
    new = np.stack([ITEMS.matrix[ITEMS.row("i12")]] * 2)
    grown = ITEMS.extended(["i12", "fresh"], new, [(), ()])
    grown_ranker = ranker.grown(len(grown))
    ctx = RetrievalContext(grown, TAGS.extended([(), ()]), np.zeros(len(grown), np.float32),
                           grown_ranker.cooc, grown_ranker.trans, SETTINGS.sequence_half_life)
    state = ProfileState("u", grown.text_dim)
    fold(state, recorded([ItemViewed("x1", "u", T0, "i10"),
                          ItemViewed("x2", "u", T0 + 60, "i11")]), ProfileConfig(), grown)
    recs = recommend_learned(state, PROFILE, RankingConfig(), ctx, grown_ranker, 10)
    assert recs is not None and recs
    ids = [r.item_id for r in recs]
    assert ids.count("i12") <= 1 and len(ids) == len(set(ids))
    assert grown_ranker.cooc.n_items == len(grown)
    assert ranker.cooc.n_items == len(ITEMS)  # the base's ranker is unchanged


def test_packed_strings_and_tags_read_like_lists_and_pickle_as_arrays() -> None:
    import pickle

    from portrait.packed import Appended, PackedStrings, PackedTags

    titles = ["Alien", "", "Amélie ✓", "Heat"]
    packed = PackedStrings.of(titles)
    assert list(packed) == titles and packed[-1] == "Heat" and packed[1:3] == titles[1:3]
    assert list(pickle.loads(pickle.dumps(packed))) == titles
    tags = [("Horror", "Sci-Fi"), (), ("Comedy", "Sci-Fi"), ("Crime",)]
    ptags = PackedTags.of(tags)
    assert list(ptags) == tags and len(ptags) == 4
    index = ItemIndex(["a", "b", "c", "d"], np.eye(4, dtype=np.float32), ptags)
    assert index.tags(2) == ("Comedy", "Sci-Fi")
    whole = TagTable(ItemIndex(["a", "b", "c", "d"], np.eye(4, dtype=np.float32), tags))
    table = TagTable(index)
    assert np.allclose(table.affinity({"Sci-Fi": 1.0, "Crime": 0.5}),
                       whole.affinity({"Sci-Fi": 1.0, "Crime": 0.5}))
    grown = index.extended(["e"], np.ones((1, 4), np.float32), [("Drama",)])
    assert grown.tags(4) == ("Drama",) and grown.tags(0) == ("Horror", "Sci-Fi")
    again = Appended(Appended(titles, ["x"]), ["y"])
    assert list(again) == [*titles, "x", "y"] and again.base is titles


def test_two_deltas_on_the_same_index_do_not_overwrite_each_other() -> None:
    """Tails share a growing buffer; a second delta applied to the same (older) index must
    not write over the rows the first one appended there."""
    base = _index()
    one = np.full((1, 4), 1.0, np.float32)
    two = np.full((1, 4), 2.0, np.float32)
    first = base.extended(["d"], one, [()])
    branch = base.extended(["e"], two, [()])  # the same base again: a copy, not the buffer
    assert np.array_equal(first.vectors([3]), one) and np.array_equal(branch.vectors([3]), two)
    longer = first.extended(["f"], two, [()])  # appends in place after "d"
    assert np.array_equal(first.vectors([3]), one) and len(first) == 4
    assert np.array_equal(longer.vectors([3, 4]), np.concatenate([one, two]))
    for k in range(3000):  # past the buffer's capacity: it grows, older tails stay readable
        longer = longer.extended([f"x{k}"], one * k, [()])
    assert np.array_equal(longer.vectors([len(longer) - 1]), one * 2999)
    assert np.array_equal(first.vectors([3]), one)
