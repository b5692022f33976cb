"""Dataset loaders: public data sets and a "bring your own data" CSV format -> :class:`Dataset`.

* :func:`load_movielens` - MovieLens CSVs (ml-latest-small is bundled under ``data/``).
* :func:`load_amazon` - Amazon Review Data (2018) JSON-lines files (not bundled).
* :func:`load_generic` - the documented ``interactions.csv`` + ``items.csv`` format.
* :func:`load_dataset` - any of them by name (``movielens``, ``amazon-magazine``...).

Every loader returns items (:class:`~portrait.catalog.ItemRecord`) and events sorted by
``(occurred_at, user_id, event_id)`` with deterministic, unique event ids, so loading twice
gives the same ids and re-appending is idempotent.
"""

from storage.datasets.amazon import load_amazon
from storage.datasets.base import Dataset, event_sort_key
from storage.datasets.generic import load_generic
from storage.datasets.movielens import load_movielens
from storage.datasets.paths import bundled_movielens_dir, shared_datasets_dir
from storage.datasets.registry import DATASET_NAMES, DatasetUnavailable, load_dataset

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "DatasetUnavailable",
    "bundled_movielens_dir",
    "event_sort_key",
    "load_amazon",
    "load_dataset",
    "load_generic",
    "load_movielens",
    "shared_datasets_dir",
]
