"""Ranking: the profile pulls similar items up, exclusions, filters, diversity, cold start."""

from __future__ import annotations

import numpy as np
import pytest

from portrait.config import ProfileConfig
from portrait.errors import InvalidField
from portrait.events import ItemDismissed, ItemPurchased, ItemViewed
from portrait.fold import replay
from portrait.items import ItemIndex, l2_normalise
from portrait.profile import ProfileState
from portrait.ranking import RankingConfig, TagTable, popularity_scores, recommend
from tests.unit.builders import recorded

CONFIG = ProfileConfig()
RANK = RankingConfig(popularity_weight=0.0, tag_weight=0.0)
T0 = 1_500_000_000.0


def clustered_catalog() -> ItemIndex:
    """Two tight clusters of five items around orthogonal directions: a* and b*."""
    rng = np.random.default_rng(1)
    base = np.eye(8)[:2]
    vecs, ids, tags = [], [], []
    for c, name in enumerate("ab"):
        for i in range(5):
            vecs.append(base[c] + 0.1 * rng.normal(size=8))
            ids.append(f"{name}{i}")
            tags.append((f"cluster-{name}",) + (("even",) if i % 2 == 0 else ()))
    return ItemIndex(ids, l2_normalise(np.array(vecs)), tags)


ITEMS = clustered_catalog()
TAGS = TagTable(ITEMS)


def profile(events) -> ProfileState:
    return replay(recorded(events), CONFIG, ITEMS, user_id="u")


def test_purchases_pull_their_cluster_up_and_are_excluded() -> None:
    state = profile([ItemPurchased("e1", "u", T0, "a0"), ItemViewed("e2", "u", T0, "a1")])
    recs = recommend(state, CONFIG, RANK, ITEMS, TAGS, k=4)
    ids = [r.item_id for r in recs]
    assert "a0" not in ids  # purchased: excluded
    assert all(i.startswith("a") for i in ids)
    assert recs[0].score >= recs[-1].score
    assert recs[0].reasons[0].kind == "similar_to"


def test_dismiss_pushes_the_cluster_down() -> None:
    state = profile([ItemDismissed("e1", "u", T0, "b0"), ItemViewed("e2", "u", T0, "a0")])
    ids = [r.item_id for r in recommend(state, CONFIG, RANK, ITEMS, TAGS, k=9)]
    assert "b0" not in ids
    assert ids.index("b1") > ids.index("a1")


def test_tag_filter_and_extra_exclusions() -> None:
    state = profile([ItemViewed("e1", "u", T0, "a0")])
    recs = recommend(state, CONFIG, RANK, ITEMS, TAGS, k=10, tags=["cluster-b"], exclude=["b1"])
    assert sorted(r.item_id for r in recs) == ["b0", "b2", "b3", "b4"]


def test_diversity_brings_the_other_cluster_in() -> None:
    state = profile([ItemViewed("e1", "u", T0, "a0")])
    plain = [r.item_id for r in recommend(state, CONFIG, RANK, ITEMS, TAGS, k=3)]
    diverse = [r.item_id for r in recommend(state, CONFIG, RANK, ITEMS, TAGS, k=3, diversity=0.9)]
    assert all(i.startswith("a") for i in plain)
    assert any(i.startswith("b") for i in diverse)


def test_cold_user_gets_popular_items_and_the_prior_fades() -> None:
    pop = popularity_scores(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 500]))  # b4 is a hit
    ranking = RankingConfig(popularity_weight=1.0, tag_weight=0.0)
    cold = ProfileState("u")
    recs = recommend(cold, CONFIG, ranking, ITEMS, TAGS, k=1, popularity=pop)
    assert recs[0].item_id == "b4" and recs[0].reasons[-1].kind == "popular"
    warm = profile([ItemViewed(f"e{i}", "u", T0 + i, f"a{i % 5}") for i in range(200)])
    assert recommend(warm, CONFIG, ranking, ITEMS, TAGS, k=1, popularity=pop)[0].item_id[0] == "a"


def test_tag_affinity_breaks_ties_towards_liked_tags() -> None:
    state = profile([ItemPurchased("e1", "u", T0, "a0")])  # a0 carries "even"
    ranking = RankingConfig(popularity_weight=0.0, tag_weight=5.0)
    ids = [r.item_id for r in recommend(state, CONFIG, ranking, ITEMS, TAGS, k=2)]
    assert set(ids) == {"a2", "a4"}


def test_bad_arguments_name_the_field() -> None:
    state = ProfileState("u")
    with pytest.raises(InvalidField) as err:
        recommend(state, CONFIG, RANK, ITEMS, TAGS, k=0)
    assert err.value.field == "k"
    with pytest.raises(InvalidField) as err:
        recommend(state, CONFIG, RANK, ITEMS, TAGS, diversity=2)
    assert err.value.field == "diversity"


def test_a_profile_ranks_in_a_retrained_item_space_without_refolding() -> None:
    # Collaborative vectors that tie a0 to the b cluster (people who bought a0 bought b*):
    # the profile folded before the retrain follows the new space at once.
    collab = np.zeros((len(ITEMS), 2))
    collab[[ITEMS.row(i) for i in ("a0", "b0", "b1", "b2", "b3", "b4")], 0] = 1.0
    collab[[ITEMS.row(i) for i in ("a1", "a2", "a3", "a4")], 1] = 1.0
    blended = np.hstack([np.sqrt(0.1) * ITEMS.matrix, np.sqrt(0.9) * collab])
    retrained = ItemIndex(
        list(ITEMS.ids), l2_normalise(blended), list(ITEMS.all_tags()),
        text_dim=ITEMS.dim, space_version="collab-1",
    )
    state = profile([ItemPurchased("e1", "u", T0, "a0")])
    before = [r.item_id for r in recommend(state, CONFIG, RANK, ITEMS, TAGS, k=4)]
    after = [r.item_id for r in recommend(state, CONFIG, RANK, retrained, TagTable(retrained), k=4)]
    assert all(i.startswith("a") for i in before)
    assert all(i.startswith("b") for i in after)
    assert retrained.space_version == "collab-1" and ITEMS.space_version == "text"


def test_most_similar_matches_the_pairwise_definition() -> None:
    """The vectorised reason picker equals the plain definition: per row, the two recent
    items (not the row itself) with the highest positive similarity, ties to the larger id."""
    from portrait.items import ItemIndex
    from portrait.ranking import _most_similar

    rng = np.random.default_rng(3)
    base = rng.standard_normal((6, 4)).astype(np.float32)
    matrix = np.vstack([base, base[:3]])  # rows 6..8 duplicate 0..2: exact similarity ties
    ids = [f"i{k}" for k in range(len(matrix))]
    items = ItemIndex(ids, matrix)
    for trial in range(50):
        recent_rows = rng.choice(len(ids), size=rng.integers(1, len(ids)), replace=False)
        recent_ids = [ids[r] for r in recent_rows]
        rows = rng.choice(len(ids), size=4, replace=False)
        got = _most_similar(rows, recent_ids, recent_rows, items)
        all_sims = items.matrix[rows] @ items.matrix[recent_rows].T  # as explain computes them
        for i, row in enumerate(rows):
            sims = all_sims[i]
            pairs = zip(sims, recent_ids, recent_rows, strict=True)
            want = sorted(((float(s), rid) for s, rid, r in pairs if r != row and s > 0),
                          reverse=True)[:2]
            assert got[i] == want, (trial, row)
