"""Datasets by name: the registry the offline commands and ``portrait import-catalog`` share."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage.datasets import DATASET_NAMES, DatasetUnavailable, load_dataset, shared_datasets_dir
from storage.datasets.paths import AMAZON_DIR_NAME

GENERIC = Path(__file__).resolve().parents[1] / "data" / "generic"
_shared = shared_datasets_dir()
needs_beauty = pytest.mark.skipif(
    _shared is None or not (_shared / AMAZON_DIR_NAME / "All_Beauty_5.json.gz").is_file(),
    reason="All_Beauty_5.json.gz is not in the shared datasets folder",
)


def test_the_names() -> None:
    assert DATASET_NAMES == ("movielens", "amazon-magazine", "amazon-beauty", "generic")


def test_an_unknown_name_is_refused_naming_the_dataset() -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("netflix")
    assert err.value.field == "dataset" and "amazon-beauty" in str(err.value)


def test_generic_needs_a_folder() -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("generic")
    assert err.value.field == "data_dir"


def test_generic_loads_from_its_folder() -> None:
    dataset = load_dataset("generic", GENERIC)
    assert dataset.items and dataset.events


def test_amazon_without_any_datasets_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("amazon-beauty", None, tmp_path / "absent")
    assert err.value.field == "data_dir"


def test_an_explicit_datasets_folder_wins(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("amazon-magazine", None, tmp_path)
    assert str(tmp_path / AMAZON_DIR_NAME) in str(err.value)


@needs_beauty
def test_amazon_beauty_has_no_metadata_and_describes_items_from_reviews() -> None:
    dataset = load_dataset("amazon-beauty")
    assert dataset.name == "amazon-beauty"
    assert dataset.counters["items_from_reviews"] == len(dataset.items) > 0
    assert len(dataset.events) > 1000
