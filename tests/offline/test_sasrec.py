"""SASRec baseline (offline/sasrec.py, its tuning offline/sasrec_tuning.py): learns a
sequential pattern, is masked and ranked by the real runner like every other system, and is
deterministic given a seed.

Small synthetic data: each user walks i -> i+1 -> i+2 ... (mod N) from a random start, with
some steps replaced by a random item. Seconds of CPU, one torch thread.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from offline.sasrec import SASRecParams, fit_sasrec, interaction_sequences  # noqa: E402
from offline.sasrec_tuning import CaseSet, evaluate_split, tune_sasrec  # noqa: E402
from portrait.evaluation.baselines import MostPopular  # noqa: E402
from portrait.evaluation.runner import run  # noqa: E402
from portrait.evaluation.splits import leave_last_out  # noqa: E402
from portrait.events import Event, ItemDismissed, ItemRated, ItemViewed, SearchPerformed  # noqa: E402

N_ITEMS = 40
ITEM_IDS = [f"it{i}" for i in range(N_ITEMS)]
SMALL = SASRecParams(
    hidden=32, blocks=1, heads=1, dropout=0.1, lr=5e-3, batch_size=16, max_len=20, epochs=40
)


def walks(n_users: int = 120, noise: float = 0.1, seed: int = 0) -> list[Event]:
    rng = np.random.default_rng(seed)
    events: list[Event] = []
    for u in range(n_users):
        start = int(rng.integers(N_ITEMS))
        length = int(rng.integers(8, 16))
        t = 1_000_000.0 + u * 10_000
        for step in range(length):
            item = (start + step) % N_ITEMS
            if rng.random() < noise:
                item = int(rng.integers(N_ITEMS))
            t += 60.0
            events.append(ItemViewed(f"u{u}:{step}", f"u{u}", t, ITEM_IDS[item]))
    return sorted(events, key=lambda e: (e.occurred_at, e.user_id, e.event_id))


@pytest.fixture(scope="module")
def data():
    events = walks()
    val, test = leave_last_out(events)
    system = fit_sasrec(test.train_events, ITEM_IDS, SMALL, seed=0, num_threads=1)
    return events, val, test, system


def test_learns_the_walk_far_above_most_popular(data) -> None:
    _, _, test, system = data
    result = run(test, [system, MostPopular()], ITEM_IDS)
    ndcg = {name: float(m["NDCG@10"].mean()) for name, m in result.metrics((10,)).items()}
    # the next item is predictable ~90% of the time; popularity is near-uniform over 40 items
    assert ndcg["sasrec"] > 0.6, ndcg
    assert ndcg["sasrec"] > ndcg["most-popular"] + 0.35, ndcg


def test_runner_masks_the_history_and_fast_evaluation_matches_it(data) -> None:
    _, _, test, system = data
    result = run(test, [system], ITEM_IDS, top_k=20)
    row_of = {item: i for i, item in enumerate(ITEM_IDS)}
    sr = result.systems["sasrec"]
    for i, case in enumerate(test.cases):
        history = {row_of[item] for item in test.history_items(case)} - {
            row_of[t] for t in case.targets
        }
        top = [r for r in sr.top[i] if r >= 0]
        assert not history & set(top)  # seen items are never recommended
        assert len(top) == min(20, N_ITEMS - len(history))
        assert all(np.isfinite(r) and r < N_ITEMS - len(history) for r in sr.ranks[i])
    # the batched validation scorer gives exactly the runner's ranks and metrics
    assert CaseSet(test, ITEM_IDS).ranks(system) == sr.ranks
    fast = evaluate_split(system, test, ITEM_IDS)
    slow = {k: float(v.mean()) for k, v in sr.metrics().items()}
    assert fast == pytest.approx(slow, abs=1e-12)


def test_session_sequence_and_fallback(data) -> None:
    _, _, test, system = data
    sess = system.session("new-user")
    ctx_counts = np.arange(N_ITEMS, dtype=np.float64)

    class Ctx:
        counts = ctx_counts

    # no interaction yet (searches and dismissals do not count): popularity fallback
    sess.observe([SearchPerformed("s1", "new-user", 1.0, "walk"),
                  ItemDismissed("d1", "new-user", 2.0, "it3")])
    assert sess.tokens == []
    assert np.array_equal(sess.scores(Ctx()), ctx_counts)
    # consecutive repeats collapse; the walk 5 -> 6 -> 7 predicts 8 first among new items
    sess.observe([
        ItemViewed("v5", "new-user", 3.0, "it5"), ItemRated("r5", "new-user", 4.0, "it5", 4.0),
        ItemViewed("v6", "new-user", 5.0, "it6"), ItemViewed("v7", "new-user", 6.0, "it7"),
        ItemViewed("x", "new-user", 7.0, "not-in-catalog"),
    ])
    assert sess.tokens == [6, 7, 8]
    scores = sess.scores(Ctx())
    assert scores.shape == (N_ITEMS,) and scores.dtype == np.float64
    new = [i for i in np.argsort(-scores, kind="stable") if i not in (5, 6, 7)]
    assert new[0] == 8


def test_sequences_follow_the_knn_interaction_rule() -> None:
    events = [
        ItemViewed("a", "u", 1.0, "it1"),
        ItemViewed("b", "u", 2.0, "it1"),
        ItemDismissed("c", "u", 3.0, "it2"),
        ItemRated("d", "u", 4.0, "it3", 2.0),
        ItemViewed("e", "u", 5.0, "it1"),
    ]
    assert interaction_sequences(events, ITEM_IDS) == {"u": [2, 4, 2]}


def test_same_seed_same_scores(data) -> None:
    events, _, test, system = data
    p = SASRecParams(**{**SMALL.to_dict(), "epochs": 5})
    a = fit_sasrec(test.train_events, ITEM_IDS, p, seed=3, num_threads=1)
    b = fit_sasrec(test.train_events, ITEM_IDS, p, seed=3, num_threads=1)
    c = fit_sasrec(test.train_events, ITEM_IDS, p, seed=4, num_threads=1)
    seqs = list(interaction_sequences(events, ITEM_IDS).values())[:20]
    sa, sb, sc = (s.score_sequences(seqs) for s in (a, b, c))
    assert np.array_equal(sa, sb)
    assert not np.array_equal(sa, sc)
    ra = run(test, [a], ITEM_IDS).systems["sasrec"].ranks
    rb = run(test, [b], ITEM_IDS).systems["sasrec"].ranks
    assert ra == rb


def test_tuning_is_deterministic_and_its_choice_refits(data) -> None:
    _, val, test, _ = data
    grid = {"hidden": (16, 32), "dropout": (0.1, 0.3)}
    kw = dict(budget=3, seed=1, base=SMALL, grid=grid, min_epochs=2, max_epochs=6,
              eta=2, patience=2, num_threads=1)
    seen: list[tuple[int, int]] = []
    t1 = tune_sasrec(val, ITEM_IDS, progress=lambda d, n, **figures: seen.append((d, n)), **kw)
    t2 = tune_sasrec(val, ITEM_IDS, **kw)
    assert t1.params == t2.params
    assert t1.validation_metrics == t2.validation_metrics
    assert [t.curve for t in t1.trials] == [t.curve for t in t2.trials]
    assert 1 <= t1.params.epochs <= 6 and len(t1.trials) == 3
    assert seen and all(d <= n for d, n in seen) and seen[-1][0] == seen[-1][1]
    # the returned system is the validation-trained model at the chosen epoch ...
    assert evaluate_split(t1.system, val, ITEM_IDS)["NDCG@10"] == t1.validation_metrics["NDCG@10"]
    # ... which a fresh fit with the chosen params and seed reproduces (interleaving-free)
    again = fit_sasrec(val.train_events, ITEM_IDS, t1.params, seed=1, num_threads=1)
    seqs = CaseSet(val, ITEM_IDS).sequences
    assert np.array_equal(again.score_sequences(seqs), t1.system.score_sequences(seqs))
    # refit_events: retrained on the test phase's events for the chosen number of epochs
    t3 = tune_sasrec(val, ITEM_IDS, refit_events=test.train_events, **kw)
    assert t1.refit is None
    assert t3.params == t1.params and t3.refit is not None and t3.refit.name == "sasrec-refit"
    assert np.array_equal(t3.system.score_sequences(seqs), t1.system.score_sequences(seqs))
    fresh = fit_sasrec(test.train_events, ITEM_IDS, t1.params, seed=1, num_threads=1)
    assert np.array_equal(fresh.score_sequences(seqs), t3.refit.score_sequences(seqs))
