"""Where datasets live: the bundled MovieLens copy and the optional shared datasets folder.

MovieLens ml-latest-small ships inside the repository (``data/``; GroupLens's terms allow
redistribution with ``README.txt`` alongside). The Amazon review files do not ship (research-use
terms), so they are found at run time, if present.
"""

from __future__ import annotations

from pathlib import Path

MOVIELENS_DIR_NAME = "movielens-ml-latest-small"
AMAZON_DIR_NAME = "amazon-reviews-2018-small"


def repo_root() -> Path:
    """The repository checkout this package was (editable-)installed from."""
    # storage/datasets/paths.py -> parents[2] is the repository root. The data folder is not
    # part of the wheel, so these paths are meaningful in a checkout only.
    return Path(__file__).resolve().parents[2]


def bundled_movielens_dir() -> Path:
    """The MovieLens ml-latest-small copy committed under ``data/``."""
    return repo_root() / "data" / MOVIELENS_DIR_NAME


def shared_datasets_dir(configured: Path | None = None) -> Path | None:
    """The folder holding non-bundled datasets (e.g. ``amazon-reviews-2018-small/``), if any.

    ``configured`` (``PORTRAIT_DATASETS_DIR``, read by the settings) wins when given: an
    explicit choice beats a convention; otherwise ``../shared/datasets`` next to the
    repository root. Returns ``None`` when the chosen folder does not exist, so callers can
    skip with a reason instead of failing.
    """
    candidate = configured if configured else repo_root().parent / "shared" / "datasets"
    return candidate if candidate.is_dir() else None
