"""The built-in default is the shipped tuned config, and the evaluation's defaults row uses it."""

from __future__ import annotations

import json
from pathlib import Path

from portrait.default_config import default_config
from portrait.evaluation.roster import default_params
from portrait.tuned_config import TunedConfig

SHIPPED = Path(__file__).resolve().parents[2] / "configs" / "tuned-movielens.json"


def test_the_default_is_the_shipped_tuned_config() -> None:
    shipped = TunedConfig.from_document(json.loads(SHIPPED.read_text()))
    default = default_config()
    assert default.profile == shipped.profile
    assert default.ranking == shipped.ranking
    assert default.item_vectors.alpha == shipped.item_vectors.alpha
    assert default.item_vectors.collaborative == shipped.item_vectors.collaborative


def test_the_evaluations_defaults_row_is_the_default() -> None:
    default = default_config()
    with_collab = default_params(has_collab=True)
    assert (with_collab.profile, with_collab.ranking) == (default.profile, default.ranking)
    assert with_collab.alpha == default.item_vectors.alpha
    assert default_params(has_collab=False).alpha == 0.0
