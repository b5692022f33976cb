"""EASE, the closed-form baseline: its weights, scores, tuning and place in the roster."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.collaborative import interactions
from portrait.evaluation.baseline_tuning import baseline_systems, tune_baselines
from portrait.evaluation.baselines import EASE, ease_l2_grid
from portrait.evaluation.roster import BASELINES
from portrait.evaluation.runner import run
from portrait.evaluation.splits import leave_last_out
from tests.unit.test_eval_leakage import IDS, synthetic_events

# users x items: a and b go together, c and d go together, e is a loner, f nobody touched
ITEMS = ["a", "b", "c", "d", "e", "f"]
X = np.array(
    [
        [1, 1, 0, 0, 0, 0],
        [1, 1, 0, 0, 1, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 0, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 0],
    ],
    dtype=np.float32,
)


def full_b(model: EASE) -> np.ndarray:
    """The (items x items) B over the whole catalog, zero for items without interactions."""
    b = np.zeros((model.n_items, model.n_items))
    b[np.ix_(model.active, model.active)] = model.weights
    return b


def ridge_per_column(x: np.ndarray, l2: float) -> np.ndarray:
    """B another way: column j is the ridge regression of item j on every other item.

    ``min ||x_j - x_{-j} b||^2 + l2 ||b||^2`` solved as the least-squares problem of
    ``[x_{-j}; sqrt(l2) I] b = [x_j; 0]``, the definition EASE's zero-diagonal constraint
    gives in closed form.
    """
    x = x.astype(np.float64)
    n = x.shape[1]
    b = np.zeros((n, n))
    for j in range(n):
        others = [i for i in range(n) if i != j]
        a = np.vstack([x[:, others], np.sqrt(l2) * np.eye(n - 1)])
        y = np.concatenate([x[:, j], np.zeros(n - 1)])
        b[others, j] = np.linalg.lstsq(a, y, rcond=None)[0]
    return b


@pytest.mark.parametrize("l2", [0.5, 3.0, 40.0])
def test_b_is_the_per_column_ridge_regression_with_a_zero_diagonal(l2: float) -> None:
    model = EASE(X, ITEMS, l2)
    b = full_b(model)
    assert np.all(np.diag(b) == 0.0)
    active = model.active
    assert list(active) == [0, 1, 2, 3, 4]  # f has no interaction: no row, no column
    expected = ridge_per_column(X[:, active], l2)
    np.testing.assert_allclose(b[np.ix_(active, active)], expected, atol=1e-5)
    assert not b[5].any() and not b[:, 5].any()


def test_a_co_occurring_item_ranks_first() -> None:
    model = EASE(X, ITEMS, 1.0)
    s = model.score_rows([ITEMS.index("c")])
    ranked = [ITEMS[i] for i in np.argsort(-s, kind="stable") if ITEMS[i] != "c"]
    assert ranked[0] == "d"


def test_sessions_score_the_distinct_positive_history() -> None:
    events = synthetic_events()
    val, _ = leave_last_out(events)
    inc = interactions(val.train_events, IDS).matrix
    model = EASE(inc, IDS, 2.0)
    user = val.cases[0].user_id
    sess = model.session(user)
    seen = val.streams[user][: val.cases[0].cutoff]
    sess.observe(seen)
    sess.observe(seen)  # the same items again: a 0/1 history, not counts
    rows = sorted({IDS.index(e.item_id) for e in seen})  # type: ignore[attr-defined]
    expected = full_b(model)[rows].sum(axis=0)
    np.testing.assert_allclose(sess.scores(None), expected, rtol=1e-6)  # type: ignore[arg-type]


def test_a_large_l2_shrinks_every_weight_towards_co_occurrence_over_l2() -> None:
    # P = (G + l2 I)^-1 ~ (I - G / l2) / l2, so B ~ G / l2 off the diagonal: the scores vanish
    # and what is left of them ranks by co-occurrence, not by the items' popularity alone
    gram = (X.T @ X).astype(np.float64)
    np.fill_diagonal(gram, 0.0)
    active = slice(0, 5)
    biggest = []
    for l2 in (10.0, 1e2, 1e4):
        b = full_b(EASE(X, ITEMS, l2))
        biggest.append(np.abs(b).max())
    np.testing.assert_allclose(b[active, active] * 1e4, gram[active, active], rtol=5e-3, atol=2e-3)
    assert biggest[0] > biggest[1] > biggest[2] > 0
    assert biggest[2] < 1e-3


def test_invalid_l2_is_refused() -> None:
    with pytest.raises(ValueError):
        EASE(X, ITEMS, 0.0)


def test_the_grid_is_in_units_of_the_mean_item_count() -> None:
    counts = X.sum(axis=0)
    mean = counts[counts > 0].mean()  # the untouched item f does not dilute it
    assert ease_l2_grid(X, (1.0, 10.0)) == [float(f"{mean:.3g}"), float(f"{10 * mean:.3g}")]


def test_tuning_chooses_l2_on_validation_and_the_roster_has_ease() -> None:
    assert "ease" in BASELINES
    val, test = leave_last_out(synthetic_events())
    inc = interactions(val.train_events, IDS).matrix
    choice = tune_baselines(val, inc, IDS, neighbors=(5,), half_lives=(1.0,), windows=(7.0,),
                            l2_factors=(0.5, 5.0))
    grid = ease_l2_grid(inc, (0.5, 5.0))
    assert choice.ease_l2 in grid
    assert {f"ease:{g:g}" for g in grid} <= set(choice.validation)
    assert choice.candidates()["ease"] == f"ease:{choice.ease_l2:g}"
    assert choice.to_dict()["ease"] == {"l2": choice.ease_l2}
    best = max(grid, key=lambda g: (choice.validation[f"ease:{g:g}"]["NDCG@10"], -grid.index(g)))
    assert choice.ease_l2 == best
    test_inc = interactions(test.train_events, IDS).matrix
    systems = baseline_systems(choice, test_inc, IDS)
    assert [s.name for s in systems] == list(BASELINES)
    result = run(test, systems, IDS)
    assert len(result.systems["ease"].ranks) == len(test.cases)
