"""Approximate retrieval: the index's recall, growth and bytes; both rankers over it return
what the exact path returns where the index is exhaustive, and keep every filter where not."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import faiss
import numpy as np
import pytest

from portrait.ann import AnnSettings, VectorIndex, recall_at
from portrait.config import ProfileConfig
from portrait.covisitation import cooccurrence
from portrait.events import Event, ItemPurchased, ItemViewed
from portrait.fold import fold, replay
from portrait.items import ItemIndex, l2_normalise
from portrait.profile import ProfileState
from portrait.ranker_features import features
from portrait.ranking import (
    AnnCatalog,
    RankingConfig,
    TagTable,
    ann_scores,
    popularity_scores,
    recommend,
    score_items,
)
from portrait.retrieval import (
    RETRIEVERS,
    RetrievalContext,
    RowRetriever,
    UserQuery,
    exact_retrievers,
    retrieve,
    retrievers_for,
    text_index,
)
from tests.unit.builders import recorded

CONFIG = ProfileConfig()
RANK = RankingConfig()
FORCE = AnnSettings(force=True)
T0 = 1_600_000_000.0
TAG_NAMES = tuple(f"t{j}" for j in range(12))


def clustered(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """Unit rows around ``clusters`` random centres (what item spaces look like)."""
    rng = np.random.default_rng(seed)
    centres = l2_normalise(rng.normal(size=(clusters, dim)))
    rows = centres[rng.integers(0, clusters, n)] + 0.35 * l2_normalise(rng.normal(size=(n, dim)))
    return l2_normalise(rows)


def catalog(n: int, dim: int = 32, seed: int = 0) -> ItemIndex:
    rng = np.random.default_rng(seed + 1)
    tags = [tuple(TAG_NAMES[j] for j in rng.choice(len(TAG_NAMES), 2, replace=False))
            for _ in range(n)]
    return ItemIndex([f"i{k}" for k in range(n)], clustered(n, dim, 8, seed), tags)


def blends(matrix: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Profile-like queries: the normalised mean of a few rows."""
    rng = np.random.default_rng(seed)
    return l2_normalise(np.stack([matrix[rng.integers(0, len(matrix), 4)].mean(0)
                                  for _ in range(n)]))


def user(items: ItemIndex, viewed: Sequence[str], bought: Sequence[str] = ()) -> ProfileState:
    evs: list[Event] = [ItemViewed(f"v{i}", "u", T0 + i, item) for i, item in enumerate(viewed)]
    evs += [ItemPurchased(f"p{i}", "u", T0 + 100 + i, item) for i, item in enumerate(bought)]
    return replay(recorded(evs), CONFIG, items, user_id="u")


# -- the index ---------------------------------------------------------------------------


def test_recall_at_200_on_a_clustered_matrix() -> None:
    m = clustered(20_000, 64, 100)
    index = VectorIndex.build(m, seed=0)
    assert recall_at(m, index, blends(m, 30), 200) >= 0.95


def test_an_added_row_is_found_and_ranked_by_its_exact_score() -> None:
    m = clustered(5_000, 32, 20)
    index = VectorIndex.build(m)
    new = -m[:1]  # far from its neighbours, so only its own list holds it
    index.add(new)
    grown = np.vstack([m, new])
    assert len(index) == 5_001
    rows, scores = index.search_scored(new[0], 3, grown)
    assert rows[0] == 5_000 and scores[0] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError):
        index.add(np.zeros((1, 31), np.float32))


def test_a_small_or_empty_index_is_searched_exhaustively() -> None:
    m = clustered(50, 8, 3)
    index = VectorIndex.build(m)
    exact = np.lexsort((np.arange(50), -(m @ m[7])))
    np.testing.assert_array_equal(index.search(m[7], 500, m), exact)  # n beyond its size
    empty = VectorIndex.build(np.zeros((0, 8), np.float32))
    assert empty.search(m[0], 5, m).size == 0
    empty.add(m[:5])
    assert empty.search(m[3], 1, m).tolist() == [3]


def test_bytes_round_trip_and_what_one_copy_costs() -> None:
    m = clustered(4_000, 64, 10)
    index = VectorIndex.build(m)
    again = VectorIndex.from_bytes(index.to_bytes())
    assert (again.ef, again.nprobe, again.refine, len(again)) == (
        index.ef, index.nprobe, index.refine, 4_000)
    for q in blends(m, 5):
        np.testing.assert_array_equal(again.search(q, 50, m), index.search(q, 50, m))
    # codes (a byte per dimension, twice), links, list ids: not the float vectors themselves
    assert again.nbytes() / len(m) < 2 * 64 + 64 * 4 + 60
    with pytest.raises(ValueError):
        VectorIndex.from_bytes(b"garbage-garbage-garbage-garbage")


def test_a_mapped_file_of_the_index_serves_the_same_rows(tmp_path: Path) -> None:
    # one copy per node: every process maps the file a publisher wrote once
    m = clustered(3_000, 32, 10)
    index = VectorIndex.build(m)
    settings, graph, lists = VectorIndex.unpack(index.to_bytes())
    (tmp_path / "graph.faiss").write_bytes(graph.tobytes())
    (tmp_path / "lists.faiss").write_bytes(lists.tobytes())
    mapped = VectorIndex(faiss.read_index(str(tmp_path / "graph.faiss"), faiss.IO_FLAG_MMAP),
                         faiss.read_index(str(tmp_path / "lists.faiss"), faiss.IO_FLAG_MMAP),
                         *settings)
    for q in blends(m, 3):
        np.testing.assert_array_equal(mapped.search(q, 30, m), index.search(q, 30, m))


def test_the_index_serves_from_the_threshold_or_when_forced() -> None:
    items = catalog(100)
    assert AnnCatalog.build(items, TagTable(items), None) is None  # default: 50k and up
    assert AnnCatalog.build(items, TagTable(items), None, AnnSettings(exact_below=100))
    assert AnnCatalog.build(items, TagTable(items), None, FORCE)


# -- row-wise pieces equal their catalog-wide versions -----------------------------------


def test_row_wise_tag_affinity_rows_and_mask_equal_the_catalog_wide_ones() -> None:
    items = catalog(300)
    table = TagTable(items)
    weights = {"t1": 2.0, "t3": -1.0, "t7": 0.5, "unknown": 3.0}
    rows = np.array([5, 0, 299, 17, 17])
    np.testing.assert_allclose(table.affinity_of(weights, rows), table.affinity(weights)[rows],
                               rtol=1e-6)
    wanted = np.flatnonzero([bool({"t2", "t9"} & set(t)) for t in items.all_tags()])
    np.testing.assert_array_equal(table.rows_with(["t2", "t9", "nope"]), wanted)
    np.testing.assert_array_equal(np.flatnonzero(table.mask(["t2", "t9"])), wanted)
    grown = table.extended([("t2",), ("zz",)])
    assert grown.rows_with(["zz"]).tolist() == [301]
    assert grown.affinity_of({"zz": 1.0}, np.array([301, 3])).tolist() == [1.0, 0.0]


def test_sparse_neighbour_scores_equal_the_catalog_wide_ones() -> None:
    rng = np.random.default_rng(0)
    nb = cooccurrence([rng.integers(0, 300, 20) for _ in range(200)], 300, k=10)
    rows, weights = np.array([3, 7, 9]), np.array([1.0, 0.5, 0.25])
    found, scores = nb.scores_of(rows, weights)
    full = nb.score(rows, weights)
    np.testing.assert_array_equal(full[found], scores)
    assert not full[np.setdiff1d(np.arange(300), found)].any()
    # a catalog grown by a delta: its new rows have no lists and weigh nothing
    grown = nb.grown(310)
    rows = np.array([305, 3, 7])
    found, scores = grown.scores_of(rows, np.array([1.0, 1.0, 0.5]))
    np.testing.assert_array_equal(grown.score(rows, np.array([1.0, 1.0, 0.5]))[found], scores)


# -- the blend over the index ------------------------------------------------------------


def _ids(recs: list) -> list[str]:  # type: ignore[type-arg]
    return [r.item_id for r in recs]


def test_the_blend_over_an_exhaustive_index_equals_the_exact_blend() -> None:
    # 80 rows: every search covers the index, so the candidates hold every allowed row
    items = catalog(80)
    table = TagTable(items)
    pop = popularity_scores(np.random.default_rng(3).integers(0, 50, len(items)))
    ann = AnnCatalog.build(items, table, pop, FORCE)
    state = user(items, ["i3", "i4", "i9"], bought=["i11"])
    for kw in ({}, {"exclude": ["i5", "i6"]}, {"tags": ["t4"]}, {"diversity": 0.5},
               {"tags": ["t1", "t2"], "exclude": ["i0"], "diversity": 0.3}):
        exact = recommend(state, CONFIG, RANK, items, table, 10, popularity=pop, **kw)
        approx = recommend(state, CONFIG, RANK, items, table, 10, popularity=pop, ann=ann,
                           **kw)
        assert _ids(approx) == _ids(exact), kw
        np.testing.assert_allclose([r.score for r in approx], [r.score for r in exact],
                                   rtol=1e-5)
        assert [r.reasons for r in approx] == [r.reasons for r in exact]


def test_the_blend_over_the_index_keeps_exclusions_dead_rows_and_tag_filters() -> None:
    items = catalog(3_000, seed=4)
    index = VectorIndex.build(items.matrix)
    # an item changed after the build: a new row supersedes its old one (a dead row)
    changed = items.extended(["i42"], -items.matrix[[42]], [("t0",)])
    index.add(-items.matrix[[42]])
    table = TagTable(changed)
    pop = popularity_scores(np.arange(len(changed)) % 7)
    ann = AnnCatalog(index, table, pop, AnnSettings(force=True, exact_tags_below=0))
    state = user(changed, ["i1", "i2"], bought=["i8"])
    query = changed.vectors(np.array([1, 2])).mean(0)
    near = np.argsort(-(changed.matrix @ query))[:150]
    exclude = [changed.ids[r] for r in near if changed.ids[r] not in ("i1", "i2", "i42")]
    recs = recommend(state, CONFIG, RANK, changed, table, 20, popularity=pop, ann=ann,
                     exclude=exclude)
    got = _ids(recs)
    assert len(got) == 20 and not set(got) & {*exclude, "i8"}
    rows = [changed.row(i) for i in got]
    assert 42 not in rows  # the superseded row never shows; the newest one may
    tagged = recommend(state, CONFIG, RANK, changed, table, 10, popularity=pop, ann=ann,
                       tags=["t5"], exclude=exclude)
    assert len(tagged) == 10 and all("t5" in changed.tags(changed.row(r.item_id) or 0)
                                     for r in tagged)
    # the new row of the changed item is found through the index
    opposite = user(changed, ["i42"])
    assert "i42" in _ids(recommend(opposite, CONFIG, RankingConfig(popularity_weight=0.0),
                                   changed, table, 5, ann=ann))


def test_the_evaluations_scores_over_an_exhaustive_index_rank_like_the_exact_ones() -> None:
    items = catalog(80)
    table = TagTable(items)
    pop = popularity_scores(np.arange(80) % 5)
    ann = AnnCatalog.build(items, table, pop, FORCE)
    assert ann is not None
    state = user(items, ["i3", "i30"])
    allowed = np.ones(80, bool)
    exact = score_items(state, CONFIG, RANK, items, table, pop)
    approx = ann_scores(state, CONFIG, RANK, items, table, ann, allowed, pop)
    np.testing.assert_array_equal(np.argsort(-approx, kind="stable")[:20],
                                  np.argsort(-exact, kind="stable")[:20])


# -- the learned ranker's retrieval over the index ---------------------------------------


def _world() -> tuple[ItemIndex, TagTable, RetrievalContext, RetrievalContext, ProfileState]:
    items = catalog(60, seed=2)
    table = TagTable(items)
    rng = np.random.default_rng(5)
    seqs = [rng.integers(0, 60, 6) for _ in range(100)]
    cooc = cooccurrence(seqs, 60, k=8)
    pop = popularity_scores(rng.permutation(60) + 1.0)  # no ties at the cut
    exact = RetrievalContext(items, table, pop, cooc, cooc)
    approx = RetrievalContext(items, table, pop, cooc, cooc,
                              ann=AnnCatalog.build(items, table, pop, FORCE),
                              text_ann=text_index(items))
    state = ProfileState("u", items.text_dim)
    fold(state, recorded([ItemViewed(f"e{i}", "u", T0 + i, f"i{i * 7 % 60}")
                          for i in range(5)]), CONFIG, items)
    return items, table, exact, approx, state


def test_row_retrievers_propose_and_score_like_the_exact_ones_on_a_small_catalog() -> None:
    items, _, exact, approx, state = _world()
    assert all(isinstance(r, RowRetriever) for r in retrievers_for(approx))
    assert not any(isinstance(r, RowRetriever) for r in retrievers_for(exact))
    allowed = np.ones(len(items), bool)
    allowed[[4, 9]] = False
    q_exact = UserQuery(state, CONFIG, RANK, exact)
    q_approx = UserQuery(state, CONFIG, RANK, approx)
    rows = np.arange(len(items))
    for ex, ap in zip(exact_retrievers(), retrievers_for(approx), strict=True):
        assert ex.name == ap.name
        np.testing.assert_array_equal(ap.propose(q_approx, 15, allowed),
                                      ex.propose(q_exact, 15, allowed), err_msg=ex.name)
        np.testing.assert_allclose(ap.score(q_approx, rows), ex.score(q_exact, rows),
                                   rtol=1e-5, atol=1e-7, err_msg=ex.name)
    assert set(RETRIEVERS) == {r.name for r in retrievers_for(approx)}


def test_the_learned_ranker_over_the_index_returns_the_exact_top_k() -> None:
    from portrait.learned_ranker import RankerSettings
    from portrait.ranker_training import train_bundle
    from portrait.two_stage import recommend_learned

    items, table, exact, approx, state = _world()
    rng = np.random.default_rng(9)
    streams = {}
    for u in range(80):
        k = int(rng.integers(60))
        evs = []
        for step in range(8):
            evs.append(ItemViewed(f"e{u}-{step}", f"u{u}", T0 + 3600 * step + u, f"i{k}"))
            k = (k + 1) % 60 if rng.random() < 0.8 else int(rng.integers(60))
        streams[f"u{u}"] = tuple(evs)
    settings = RankerSettings(candidates=20, neighbours=10, rounds=30, min_groups=20,
                              min_data_in_leaf=5, labels_per_user=3)
    bundle = train_bundle(streams, items, table, {}, CONFIG, RANK, settings)
    ranker = bundle.bind(items)
    ctx_exact = RetrievalContext(items, table, exact.popularity, ranker.cooc, ranker.trans)
    ctx_approx = RetrievalContext(items, table, exact.popularity, ranker.cooc, ranker.trans,
                                  ann=approx.ann, text_ann=approx.text_ann)
    for kw in ({}, {"exclude": ["i3"], "diversity": 0.4}, {"tags": ["t2", "t5"]}):
        a = recommend_learned(state, CONFIG, RANK, ctx_exact, ranker, 10, **kw)
        b = recommend_learned(state, CONFIG, RANK, ctx_approx, ranker, 10, **kw)
        assert a is not None and b is not None
        assert _ids(b) == _ids(a), kw
        np.testing.assert_allclose([r.score for r in b], [r.score for r in a], rtol=1e-5)


def test_a_strong_popularity_prior_finds_its_popular_items_beyond_the_nearest() -> None:
    # the tuned Magazine blend weighs popularity 0.77: the blend's top 10 mixes the nearest
    # rows with popular ones that are not near, which the popular list must bring in
    items = catalog(4_000, seed=6)
    table = TagTable(items)
    pop = popularity_scores(np.random.default_rng(8).zipf(1.3, len(items)).astype(float))
    strong = RankingConfig(popularity_weight=0.8, tag_weight=0.0, cold_start_events=4.0)
    ann = AnnCatalog(VectorIndex.build(items.matrix), table, pop, FORCE)
    for viewed in (["i1"], ["i5", "i77", "i300"], ["i9", "i10"]):
        state = user(items, viewed)
        exact = recommend(state, CONFIG, strong, items, table, 10, popularity=pop)
        approx = recommend(state, CONFIG, strong, items, table, 10, popularity=pop, ann=ann)
        assert _ids(approx) == _ids(exact), viewed


def test_row_retrievers_over_a_catalog_grown_by_a_delta_match_the_exact_ones() -> None:
    items, table, exact, approx, _ = _world()
    assert approx.ann is not None and approx.text_ann is not None
    new = l2_normalise(items.matrix[[3]] + items.matrix[[5]])
    grown = items.extended(["new-1"], new, [("t1",)])
    approx.ann.index.add(new)  # the view's index takes the delta's rows
    approx.text_ann.add(new[:, : items.text_dim] / np.linalg.norm(new[:, : items.text_dim]))
    gtable = table.extended([("t1",)])
    pop = np.append(exact.popularity, np.float32(0.5))
    cooc = exact.cooc.grown(len(grown)) if exact.cooc is not None else None
    g_exact = RetrievalContext(grown, gtable, pop, cooc, cooc)
    g_approx = RetrievalContext(grown, gtable, pop, cooc, cooc,
                                ann=AnnCatalog(approx.ann.index, gtable, pop, FORCE),
                                text_ann=approx.text_ann,
                                _text_norms=approx.text_norms())  # the old rows' only
    state = ProfileState("u", grown.text_dim)
    fold(state, recorded([ItemViewed("e1", "u", T0, "i3"), ItemViewed("e2", "u", T0 + 1,
                                                                      "new-1")]), CONFIG, grown)
    allowed = np.ones(len(grown), bool)
    q_exact, q_approx = (UserQuery(state, CONFIG, RANK, c) for c in (g_exact, g_approx))
    for ex, ap in zip(exact_retrievers(), retrievers_for(g_approx), strict=True):
        np.testing.assert_array_equal(ap.propose(q_approx, 15, allowed),
                                      ex.propose(q_exact, 15, allowed), err_msg=ex.name)
    assert 60 in retrievers_for(g_approx)[0].propose(q_approx, 5, allowed)  # found by the index
    cands = retrieve(q_approx, retrievers_for(g_approx), 15, allowed)
    np.testing.assert_allclose(
        features(q_approx, cands), features(q_exact, retrieve(q_exact, exact_retrievers(), 15,
                                                              allowed)), rtol=1e-5, atol=1e-6)
