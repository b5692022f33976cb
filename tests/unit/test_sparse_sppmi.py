"""The sparse SPPMI path: the dense formula's values, its bounds (top-K per item, capped
histories, no items x items array), and the same embedding as the dense factorisation."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy import sparse

from portrait import collaborative, range_finder
from portrait.collaborative import (
    Interactions,
    item_vectors,
    sppmi_embedding,
    sppmi_matrix,
    train_item_space,
)
from portrait.item_space import CollabSettings
from portrait.range_finder import randomized_eigh
from portrait.sppmi import (
    by_row_then_strength,
    row_blocks,
    sparse_sppmi,
    strongest_per_row,
    user_item_matrix,
)


def clustered_pairs(
    users: int = 300, items: int = 120, per_user: int = 12, seed: int = 0
) -> Interactions:
    """Users drawn towards one of four item groups, popularity skewed: structure to find."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 4, users)
    pop = 1.0 / np.arange(1, items + 1) ** 0.7
    us, rows = [], []
    for u in range(users):
        own = np.arange(group[u], items, 4)
        picks = np.concatenate([
            rng.choice(own, per_user // 2, p=pop[own] / pop[own].sum()),
            rng.choice(items, per_user - per_user // 2, p=pop / pop.sum()),
        ])
        us += [u] * per_user
        rows += picks.tolist()
    code = np.unique(np.asarray(us) * items + np.asarray(rows))
    return Interactions(tuple(map(str, range(users))), code // items, code % items, items)


def test_the_sparse_matrix_has_the_dense_formulas_values() -> None:
    pairs = clustered_pairs()
    x = user_item_matrix(pairs.user_index, pairs.item_rows, (len(pairs.users), pairs.n_items))
    dense = sppmi_matrix(x.toarray(), shift=2.0)
    got = sparse_sppmi(x, shift=2.0)
    assert got.dtype == np.float32 and np.count_nonzero(got.diagonal()) == 0
    assert np.allclose(got.toarray(), dense, atol=1e-6)
    assert got.nnz == np.count_nonzero(dense)  # no stored zeros


def test_blocks_of_rows_give_the_same_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = clustered_pairs()
    x = user_item_matrix(pairs.user_index, pairs.item_rows, (len(pairs.users), pairs.n_items))
    whole = sparse_sppmi(x).toarray()
    blocks: list[tuple[int, int]] = []

    def progress(done: int, total: int, /, **figures: float) -> None:
        blocks.append((done, total))

    monkeypatch.setattr("portrait.sppmi.BLOCK_PRODUCTS", 500)  # many small blocks
    got = sparse_sppmi(x, progress=progress)
    assert len(blocks) > 5 and blocks[-1][0] == blocks[-1][1]
    assert np.array_equal(got.toarray(), whole)


def test_row_blocks_respect_the_budget_and_cover_every_row() -> None:
    products = np.array([3, 3, 3, 10, 1, 1, 0, 2], dtype=np.float64)
    blocks = row_blocks(products, 6)
    assert blocks[0] == (0, 2) and blocks[-1][1] == products.size
    assert all(hi > lo for lo, hi in blocks)
    assert [b for b in blocks if b[1] - b[0] > 1] and all(
        products[lo:hi].sum() <= 6 or hi - lo == 1 for lo, hi in blocks
    )


def test_each_item_keeps_its_strongest_entries_and_the_matrix_at_most_2k_per_item() -> None:
    pairs = clustered_pairs()
    x = user_item_matrix(pairs.user_index, pairs.item_rows, (len(pairs.users), pairs.n_items))
    full = sparse_sppmi(x).toarray()
    k = 5
    assert (np.count_nonzero(full, axis=1) > k).any()  # the bound has work to do
    cut = sparse_sppmi(x, per_item=k)
    dense_cut = cut.toarray()
    assert np.array_equal(dense_cut, dense_cut.T)
    assert cut.nnz <= 2 * k * full.shape[0] and cut.nnz < np.count_nonzero(full)
    kept = dense_cut > 0
    assert np.array_equal(dense_cut[kept], full[kept])  # values untouched
    for i in range(full.shape[0]):
        top = np.sort(full[i])[::-1][:k]
        top = top[top > 0]
        assert np.all(np.isin(top, dense_cut[i][kept[i]]))  # its own top-k all kept


def test_strongest_per_row_keeps_ties_in_the_order_given() -> None:
    rows = np.array([0, 0, 0, 0, 1], dtype=np.int32)
    cols = np.array([2, 5, 7, 9, 1], dtype=np.int32)
    vals = np.array([1.0, 1.0, 3.0, 0.5, 2.0], dtype=np.float32)
    r, c, v, dropped = strongest_per_row(rows, cols, vals, 2, 2)
    assert dropped and r.tolist() == [0, 0, 1]
    assert sorted(zip(c.tolist(), v.tolist(), strict=True)) == [(1, 2.0), (2, 1.0), (7, 3.0)]


def test_one_key_sorts_as_the_lexsort_does() -> None:
    rng = np.random.default_rng(2)
    rows = np.sort(rng.integers(0, 50, 5_000))
    vals = rng.choice(np.array([0.25, 1.0, 1e-8, 3.5, 7e5], dtype=np.float32), rows.size)
    assert np.array_equal(by_row_then_strength(rows, vals), np.lexsort((-vals, rows)))


def test_long_histories_are_sampled_to_the_cap_the_same_way_every_time() -> None:
    users = np.repeat([0, 1, 2], [50, 3, 20])
    items = np.concatenate([np.arange(50), [1, 2, 3], np.arange(100, 120)])
    shape = (3, 200)
    capped = user_item_matrix(users, items, shape, max_user_items=10, seed=3)
    assert np.diff(capped.indptr).tolist() == [10, 3, 10]
    assert set(capped[0].indices) <= set(range(50))
    again = user_item_matrix(users, items, shape, max_user_items=10, seed=3)
    assert (capped != again).nnz == 0
    uncapped = user_item_matrix(users, items, shape, 0)
    assert np.diff(uncapped.indptr).tolist() == [50, 3, 20]


def test_duplicate_pairs_count_once() -> None:
    x = user_item_matrix(np.array([0, 0, 0, 1]), np.array([1, 1, 2, 1]), (2, 3))
    assert x.toarray().tolist() == [[0, 1, 1], [0, 1, 0]]


def reference_embedding(pairs: Interactions, settings: CollabSettings) -> np.ndarray:
    """The dense pipeline: a dense SPPMI of the kept items, then the range finder."""
    keep = collaborative.kept_items(pairs, settings)
    dense = sppmi_matrix(pairs.matrix[:, keep], settings.shift)
    vals, vecs = randomized_eigh(dense, settings.dim, settings.oversample,
                                 settings.power_iterations, settings.seed)
    emb = vecs[:, vals > 0] * np.sqrt(vals[vals > 0])
    out = np.zeros((pairs.n_items, settings.dim), dtype=np.float32)
    out[keep, : emb.shape[1]] = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    return out


def neighbours(emb: np.ndarray, k: int = 5) -> list[set[int]]:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return [set(np.argsort(-row)[:k].tolist()) for row in sims]


@pytest.mark.parametrize("dense_products", [True, False])
def test_the_sparse_path_gives_the_dense_pipelines_embedding(
    dense_products: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = clustered_pairs()
    settings = CollabSettings(dim=8, oversample=8, power_iterations=4, min_count=2)
    if not dense_products:  # the products with the sparse matrix itself
        monkeypatch.setattr(collaborative, "DENSE_CELLS", 0)
    got = sppmi_embedding(pairs, settings)
    want = reference_embedding(pairs, settings)
    # Up to sign and rotation inside the eigenspace: the similarities are what is used.
    assert np.allclose(got @ got.T, want @ want.T, atol=1e-4)
    same = [len(a & b) for a, b in zip(neighbours(got), neighbours(want), strict=True)]
    assert np.mean(same) >= 4.9


def test_the_gram_basis_spans_what_the_qr_basis_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = clustered_pairs()
    settings = CollabSettings(dim=8, oversample=8, min_count=2)
    qr = sppmi_embedding(pairs, settings)
    monkeypatch.setattr(range_finder, "QR_CELLS", 0)
    gram = sppmi_embedding(pairs, settings)
    assert np.allclose(gram @ gram.T, qr @ qr.T, atol=1e-4)


def test_a_rank_deficient_matrix_gives_fewer_columns_not_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(range_finder, "QR_CELLS", 0)
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.normal(size=(40, 3)))[0]
    m = (basis * np.array([5.0, 3.0, 1.0])) @ basis.T  # rank 3
    vals, vecs = randomized_eigh(sparse.csr_matrix(m.astype(np.float32)), 6, 4)
    assert vecs.shape[1] <= 6 and np.allclose(vals[:3], [5.0, 3.0, 1.0], atol=1e-4)
    assert np.allclose(np.abs(vecs[:, :3].T @ basis), np.eye(3)[[0, 1, 2]], atol=1e-3)


def test_the_range_finder_gives_the_same_pairs_for_a_sparse_and_a_dense_matrix() -> None:
    pairs = clustered_pairs()
    m = sppmi_matrix(pairs.matrix)
    d_vals, d_vecs = randomized_eigh(m, 6, 8, 3, 0)
    s_vals, s_vecs = randomized_eigh(sparse.csr_matrix(m), 6, 8, 3, 0)
    assert np.allclose(d_vals, s_vals, rtol=1e-4)
    assert np.allclose(np.abs(np.sum(d_vecs * s_vecs, axis=0)), 1.0, atol=1e-3)


def test_a_catalog_whose_items_squared_would_not_fit_trains_in_little_memory() -> None:
    # 300,000 items: a dense items x items float32 matrix would be 360 GB.
    n_items, per_user = 300_000, 6
    users = n_items // 2
    rng = np.random.default_rng(0)
    rows = rng.permutation(np.repeat(np.arange(n_items), 3))[: users * per_user]
    pairs = Interactions(tuple(map(str, range(users))),
                         np.repeat(np.arange(users), per_user), rows, n_items)
    settings = CollabSettings(dim=8, oversample=4, power_iterations=1, min_count=1,
                              max_items=n_items, max_nonzeros=3_000_000)
    tracemalloc.start()
    try:
        space = train_item_space(pairs, [f"i{k}" for k in range(n_items)], settings,
                                 trained_through=1, events=rows.size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(space.item_ids) > n_items // 2 and space.vectors.shape[1] == 8
    assert np.allclose(np.linalg.norm(space.vectors, axis=1), 1.0, atol=1e-4)
    assert peak < 400 * 2**20, f"peak {peak / 2**20:.0f} MiB"


def test_item_vectors_return_only_the_kept_rows() -> None:
    pairs = clustered_pairs()
    settings = CollabSettings(dim=8, oversample=8, min_count=2, max_items=50)
    keep, emb = item_vectors(pairs, settings)
    assert keep.size == 50 and emb.shape[0] == 50 and 0 < emb.shape[1] <= 8
    full = sppmi_embedding(pairs, settings)
    assert np.allclose(full[keep, : emb.shape[1]], emb)
    assert not full[np.setdiff1d(np.arange(120), keep)].any()


def test_the_scale_bounds_are_written_only_when_set() -> None:
    assert "max_nonzeros" not in CollabSettings().to_dict()
    bounded = CollabSettings(max_user_items=100, max_nonzeros=1_000)
    doc = bounded.to_dict()
    assert doc["max_user_items"] == 100 and doc["max_nonzeros"] == 1_000
    assert CollabSettings.from_dict(doc) == bounded
