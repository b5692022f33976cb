"""Datasets by name: the one place that maps a name (and an optional folder) to a loader.

=================== ===================================================================
name                source
=================== ===================================================================
``movielens``       MovieLens CSVs; the bundled ml-latest-small unless a folder is given
``amazon-magazine`` Amazon 2018 Magazine_Subscriptions 5-core reviews with their metadata
``amazon-beauty``   Amazon 2018 All_Beauty 5-core reviews (no metadata file: items are
                    described by their review summaries, see :func:`load_amazon`)
``generic``         the documented ``interactions.csv`` + ``items.csv`` format; needs a folder
=================== ===================================================================

The Amazon sets are read from the folder given, or else from ``amazon-reviews-2018-small/``
in the datasets folder (the one given, else :func:`shared_datasets_dir`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from portrait.errors import InvalidInput
from storage.datasets.amazon import load_amazon
from storage.datasets.base import Dataset
from storage.datasets.generic import load_generic
from storage.datasets.movielens import load_movielens
from storage.datasets.paths import AMAZON_DIR_NAME, shared_datasets_dir

# name -> (reviews file, metadata file or None), inside the Amazon folder
AMAZON_FILES: Mapping[str, tuple[str, str | None]] = MappingProxyType({
    "amazon-magazine": ("Magazine_Subscriptions_5.json.gz", "meta_Magazine_Subscriptions.json.gz"),
    "amazon-beauty": ("All_Beauty_5.json.gz", None),
})
DATASET_NAMES = ("movielens", *AMAZON_FILES, "generic")


class DatasetUnavailable(InvalidInput):
    """A dataset name nobody registered, or one that cannot be located without a folder.

    ``field`` is ``"dataset"`` (the name) or ``"data_dir"`` (the folder).
    """


def load_dataset(
    name: str, data_dir: Path | None = None, datasets_dir: Path | None = None
) -> Dataset:
    """Load the dataset registered as ``name``.

    Args:
        name: one of :data:`DATASET_NAMES`.
        data_dir: the dataset's own folder; ``None`` for the default location (the bundled
            MovieLens copy, the Amazon folder in ``datasets_dir``). Required for ``generic``.
        datasets_dir: the folder holding the non-bundled data sets; ``None`` for
            :func:`shared_datasets_dir` (``../shared/datasets``).

    Returns:
        The loaded dataset; the Amazon sets are named after their registry name.

    Raises:
        DatasetUnavailable: an unknown name, or no folder where one is needed.
        OSError: a data file is missing or unreadable.
        InvalidField: a data file holds something the loader refuses.
    """
    if name == "movielens":
        return load_movielens(data_dir)
    if name in AMAZON_FILES:
        reviews, meta = AMAZON_FILES[name]
        base = data_dir if data_dir is not None else _amazon_dir(name, datasets_dir)
        return load_amazon(base / reviews, base / meta if meta else None, name=name)
    if name == "generic":
        if data_dir is None:
            raise DatasetUnavailable(
                "data_dir", "the generic format needs a folder with interactions.csv and items.csv"
            )
        return load_generic(data_dir / "interactions.csv", data_dir / "items.csv")
    raise DatasetUnavailable(
        "dataset", f"unknown dataset {name!r}; use one of {', '.join(DATASET_NAMES)}"
    )


def _amazon_dir(name: str, datasets_dir: Path | None) -> Path:
    shared = shared_datasets_dir(datasets_dir)
    if shared is None:
        raise DatasetUnavailable(
            "data_dir", f"{name}: no folder given and no shared datasets folder "
            "(set PORTRAIT_DATASETS_DIR)"
        )
    return shared / AMAZON_DIR_NAME
