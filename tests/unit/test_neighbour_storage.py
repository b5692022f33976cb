"""Neighbour lists' storage: int32 rows, ``k`` trimmed to the longest list, co-occurrence
computed in blocks of item rows with the whole product's result."""

from __future__ import annotations

import numpy as np
import pytest

from portrait import covisitation
from portrait.covisitation import Neighbours, cooccurrence, transitions


def sequences(users: int = 80, items: int = 60, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(items, int(rng.integers(2, 15)), replace=False) for _ in range(users)]


def test_lists_are_int32_and_no_wider_than_the_longest() -> None:
    seqs = [np.array([0, 1, 2]), np.array([2, 3])]
    cooc = cooccurrence(seqs, 6, k=100)
    assert cooc.nbr.dtype == np.int32 and cooc.sim.dtype == np.float32
    assert cooc.nbr.shape == (6, 3)  # item 2 has three neighbours, nobody more
    trans = transitions(seqs, 6, k=100)
    assert trans.nbr.dtype == np.int32 and trans.nbr.shape[1] <= 3
    assert transitions([np.array([4])], 6, k=10).nbr.shape == (6, 1)  # nothing followed


def test_blocks_of_rows_give_the_whole_products_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = sequences()
    whole = cooccurrence(seqs, 60, k=7)
    monkeypatch.setattr(covisitation, "BLOCK_PRODUCTS", 40)
    blocked = cooccurrence(seqs, 60, k=7)
    assert np.array_equal(whole.nbr, blocked.nbr) and np.array_equal(whole.sim, blocked.sim)
    # strongest first, and the diagonal never listed
    assert np.all(np.diff(whole.sim, axis=1) <= 0)
    listed = whole.sim > 0
    assert not np.any((whole.nbr == np.arange(60)[:, None]) & listed)


def test_lists_stored_as_int64_still_score_and_remap() -> None:
    cooc = cooccurrence(sequences(), 60, k=5)
    old = Neighbours(cooc.nbr.astype(np.int64), cooc.sim)
    rows, weights = np.array([3, 7]), np.array([1.0, 0.5])
    assert np.allclose(old.score(rows, weights), cooc.score(rows, weights))
    where = np.random.default_rng(1).permutation(70)[:60]
    moved = old.remap(where, 70)
    assert moved.nbr.dtype == np.int32
    assert np.array_equal(moved.nbr, cooc.remap(where, 70).nbr)
    assert np.allclose(moved.score(where[rows], weights)[where], cooc.score(rows, weights))
