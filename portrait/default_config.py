"""The configuration the service runs with when none is given, and the one the evaluation's
``blend-defaults`` row measures: the same value, so the row is what users get.

It is ``configs/tuned-movielens.json`` (``portrait tune`` on ml-latest-small's validation split;
that file keeps the search's provenance and figures), restricted to what changes behaviour.
A unit test keeps the two equal. Tuned on one data set: ``PORTRAIT_PROFILE_CONFIG`` with a
config tuned on yours is better where your data differ.
"""

from __future__ import annotations

from portrait.tuned_config import TunedConfig

DEFAULT_DOCUMENT = {
    "version": 1,
    "profile": {
        "long_half_life_days": 70.41788774055877,
        "short_half_life_days": 0.0005939553753976451,
        "tag_half_life_days": 106.15273858008793,
        "event_weights": {
            "add_to_cart": 1.0, "click": 0.5, "dismiss": -1.0, "purchase": 2.0,
            "rating": 1.0, "review": 1.0, "search": 0.5, "view": 0.2,
        },
        "text_weights": {"review": 1.0, "search": 1.0},
        "rating_center": -3.7576801710465504,
        "rating_scale": 2.0,
        "recent_items": 20,
        "exclude_types": ["dismiss", "purchase", "rating", "review"],
    },
    "ranking": {
        "short_mix": 1.0, "tag_weight": 0.0, "popularity_weight": 2.5,
        "cold_start_events": 1.0, "mmr_pool": 200,
    },
    "item_vectors": {
        "model_id": "sentence-transformers/all-MiniLM-L6-v2",
        "alpha": 0.9297740611785766,
        "collaborative": {
            "dim": 512, "shift": 1.0, "min_count": 2, "max_items": 12000,
            "power_iterations": 3, "oversample": 16, "seed": 0,
        },
    },
}


def default_config() -> TunedConfig:
    """The shipped default (a fresh value: configs are frozen, this just avoids a global)."""
    return TunedConfig.from_document(DEFAULT_DOCUMENT)
