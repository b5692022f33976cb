"""The two-stage ranker in the domain: neighbour models, training, the bundle, serving, faults.

A synthetic world with sequential structure the linear blend cannot see: item vectors are
random, but users walk the catalog in order (item k, then k+1, ...), so only the transition
model and the ranker over it can predict the next item.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from portrait import learned_ranker
from portrait.config import ProfileConfig
from portrait.covisitation import cooccurrence, transitions
from portrait.events import Event, ItemViewed
from portrait.fold import fold
from portrait.learned_ranker import (
    IncompatibleRanker,
    NotEnoughTraining,
    RankerBundle,
    RankerSettings,
)
from portrait.profile import ProfileState
from portrait.ranker_features import feature_names, features
from portrait.ranker_training import label_cuts, train_bundle, training_set
from portrait.ranking import RankingConfig, TagTable
from portrait.retrieval import RetrievalContext, UserQuery, exact_retrievers, retrieve
from portrait.two_stage import recommend_learned
from tests.unit.builders import catalog, recorded

ITEMS = catalog(n=40)
TAGS = TagTable(ITEMS)
PROFILE = ProfileConfig()
RANKING = RankingConfig()
SETTINGS = RankerSettings(candidates=20, neighbours=10, rounds=40, min_groups=20,
                          min_data_in_leaf=5, labels_per_user=3)
T0 = 1_600_000_000.0


def walks(users: int = 80, length: int = 8, seed: int = 0) -> dict[str, tuple[Event, ...]]:
    """Each user starts anywhere and mostly steps to the next item."""
    rng = np.random.default_rng(seed)
    out = {}
    for u in range(users):
        k = int(rng.integers(len(ITEMS)))
        evs: list[Event] = []
        for step in range(length):
            evs.append(ItemViewed(f"e{u}-{step}", f"u{u}", T0 + 3600 * step + u, f"i{k}"))
            k = (k + 1) % len(ITEMS) if rng.random() < 0.85 else int(rng.integers(len(ITEMS)))
        out[f"u{u}"] = tuple(evs)
    return out


def test_transitions_learn_what_follows_and_cooccurrence_is_symmetric() -> None:
    seqs = [np.array([0, 1, 2]), np.array([0, 1, 3]), np.array([5, 0, 1])]
    trans = transitions(seqs, 6, k=2, window=1)
    assert trans.nbr[0, 0] == 1 and trans.sim[0, 0] > 0
    assert 0 not in trans.nbr[1][trans.sim[1] > 0]  # nobody went from 1 back to 0
    cooc = cooccurrence(seqs, 6, k=5)
    assert set(cooc.nbr[0][cooc.sim[0] > 0]) == {1, 2, 3, 5}
    assert 0 in cooc.nbr[1][cooc.sim[1] > 0]


def test_neighbours_remapped_to_another_catalog_drop_missing_items() -> None:
    trans = transitions([np.array([0, 1, 2])], 3, k=2, window=2)
    # new catalog: item 1 is gone, item 0 -> row 2, item 2 -> row 0
    moved = trans.remap(np.array([2, -1, 0]), 4)
    scores = moved.score(np.array([2]), np.array([1.0]))
    assert scores[0] > 0 and scores[1] == 0 and scores[3] == 0


def test_the_ranker_learns_the_walk_and_explains_with_the_item_before() -> None:
    bundle = train_bundle(walks(), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    assert bundle.metrics["groups"] >= SETTINGS.min_groups
    ranker = bundle.bind(ITEMS)
    ctx = RetrievalContext(ITEMS, TAGS, np.zeros(len(ITEMS), np.float32), ranker.cooc,
                           ranker.trans, SETTINGS.sequence_half_life)
    state = ProfileState("new", ITEMS.text_dim)
    fold(state, recorded([ItemViewed("x1", "new", T0, "i10"), ItemViewed("x2", "new", T0 + 60,
                                                                         "i11")]),
         PROFILE, ITEMS)
    recs = recommend_learned(state, PROFILE, RANKING, ctx, ranker, 5)
    assert recs is not None
    assert recs[0].item_id == "i12"
    assert any(r.kind == "similar_to" and r.value in {"i10", "i11"} for r in recs[0].reasons)
    # a user with nothing to rank by is left to the blend
    assert recommend_learned(ProfileState("cold", ITEMS.text_dim), PROFILE, RANKING, ctx,
                             ranker, 5) is None


def test_a_bundle_round_trips_through_bytes_and_scores_the_same() -> None:
    bundle = train_bundle(walks(), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    again = RankerBundle.from_bytes(bundle.to_bytes())
    assert again.features == bundle.features and again.settings == bundle.settings
    x = np.random.default_rng(0).normal(size=(7, len(bundle.features))).astype(np.float32)
    np.testing.assert_allclose(again.bind(ITEMS).predict(x), bundle.bind(ITEMS).predict(x))


def test_a_ranker_from_other_code_is_never_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = train_bundle(walks(), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    blob = bundle.to_bytes()
    with pytest.raises(IncompatibleRanker):
        RankerBundle.from_bytes(b"not a ranker")
    other = dataclasses.replace(bundle, features=bundle.features[::-1])
    with pytest.raises(IncompatibleRanker, match="other features"):
        RankerBundle.from_bytes(other.to_bytes())
    monkeypatch.setattr(learned_ranker, "FEATURES_VERSION", learned_ranker.FEATURES_VERSION + 1)
    with pytest.raises(IncompatibleRanker, match="features version"):
        RankerBundle.from_bytes(blob)


def test_too_little_data_is_refused_with_the_reason() -> None:
    with pytest.raises(NotEnoughTraining, match="at least 20"):
        train_bundle(walks(users=4), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)


def test_nan_and_infinite_inputs_never_reach_the_model() -> None:
    pop = np.full(len(ITEMS), np.nan, dtype=np.float32)
    pop[:5] = np.inf
    ctx = RetrievalContext(ITEMS, TAGS, pop)
    state = ProfileState("u", ITEMS.text_dim)
    fold(state, recorded([ItemViewed("x1", "u", T0, "i3")]), PROFILE, ITEMS)
    query = UserQuery(state, PROFILE, RANKING, ctx)
    cands = retrieve(query, exact_retrievers(), 10, np.ones(len(ITEMS), bool))
    x = features(query, cands)
    assert x.shape == (cands.rows.size, len(feature_names()))
    assert np.isfinite(x).all()


def test_events_after_a_label_never_reach_its_features() -> None:
    streams = walks()
    # every user comes back to their first item after their last label: nothing new, so the
    # labels stay the same, and nothing after them may change a single feature value
    later = {
        u: evs + (ItemViewed(f"late-{u}", u, T0 + 10**6, evs[0].item_id),)  # type: ignore[attr-defined]
        for u, evs in streams.items()
    }
    assert all(label_cuts(streams[u], 3) == label_cuts(later[u], 3) for u in streams)
    a = training_set(streams, ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    b = training_set(later, ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.groups, b.groups)


def test_path_contributions_add_up_to_the_score() -> None:
    bundle = train_bundle(walks(), ITEMS, TAGS, {}, PROFILE, RANKING, SETTINGS)
    ranker = bundle.bind(ITEMS)
    x = np.random.default_rng(1).normal(size=(9, len(bundle.features))).astype(np.float32)
    contrib = ranker.contributions(x)
    assert contrib.shape == (9, len(bundle.features) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), ranker.predict(x), rtol=1e-5, atol=1e-6)
    # the path credits, not LightGBM's TreeSHAP (pred_contrib), which costs more than a whole
    # request: both add up to the score, but they split it differently
    np.testing.assert_allclose(contrib, ranker.paths.contributions(x))
