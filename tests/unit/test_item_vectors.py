"""Items that bring their own vector (``vector`` / ``vector_b64`` with ``vector_model``): the
domain's parsing and checks, each error naming the key the caller sent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from portrait.catalog import (
    MAX_VECTOR_DIM,
    ItemVector,
    from_dict,
    item_from_dict,
    vector_from_dict,
    vector_to_b64,
)
from portrait.errors import InvalidField, MissingField

ITEM = {"id": "a", "title": "Trail shoe"}


def test_a_list_and_its_base64_give_the_same_unit_vector() -> None:
    record, listed = item_from_dict({**ITEM, "vector": [3, 4.0], "vector_model": "m"})
    _, packed = item_from_dict({**ITEM, "vector_b64": vector_to_b64(np.array([3.0, 4.0])),
                                "vector_model": "m"})
    assert record.item_id == "a" and listed is not None and packed is not None
    assert listed.values.dtype == np.dtype("<f4") and listed.values.tolist() == pytest.approx(
        [0.6, 0.8])
    assert listed.stored_bytes() == packed.stored_bytes()
    assert (listed.field, packed.field, listed.model_id, listed.dim) == (
        "vector", "vector_b64", "m", 2)
    assert not listed.values.flags.writeable


def test_no_vector_is_none_and_from_dict_still_refuses_vector_keys() -> None:
    assert item_from_dict(ITEM)[1] is None
    assert item_from_dict({**ITEM, "vector": None, "vector_model": None})[1] is None
    with pytest.raises(InvalidField) as err:  # a loader reading plain items loses nothing
        from_dict({**ITEM, "vector": [1.0], "vector_model": "m"})
    assert err.value.field == "vector"


def test_huge_and_tiny_numbers_normalise_without_overflow() -> None:
    big = ItemVector(np.array([1e308, 1e308]), "m")
    assert big.values.tolist() == pytest.approx([math.sqrt(0.5)] * 2)
    tiny = ItemVector(np.frombuffer(np.array([1e-45, 0.0], "<f4").tobytes(), "<f4"), "m")
    assert tiny.values.tolist() == [1.0, 0.0]


@pytest.mark.parametrize(("extra", "field"), [
    ({"vector": [1.0]}, "vector_model"),
    ({"vector_model": "m"}, "vector_model"),
    ({"vector": [1.0], "vector_model": 7}, "vector_model"),
    ({"vector": [1.0], "vector_model": " "}, "vector_model"),
    ({"vector": [1.0], "vector_b64": "AACAPw==", "vector_model": "m"}, "vector_b64"),
    ({"vector": "1,2", "vector_model": "m"}, "vector"),
    ({"vector": [], "vector_model": "m"}, "vector"),
    ({"vector": [0.0] * (MAX_VECTOR_DIM + 1), "vector_model": "m"}, "vector"),
    ({"vector": [1.0, True], "vector_model": "m"}, "vector[1]"),
    ({"vector": [1.0, "2"], "vector_model": "m"}, "vector[1]"),
    ({"vector": [0, 0.0], "vector_model": "m"}, "vector"),
    ({"vector": [1.0, float("nan")], "vector_model": "m"}, "vector"),
    ({"vector": [float("inf"), 1.0], "vector_model": "m"}, "vector"),
    ({"vector": [10**400], "vector_model": "m"}, "vector"),
    ({"vector_b64": "not base64!", "vector_model": "m"}, "vector_b64"),
    ({"vector_b64": "AAAA", "vector_model": "m"}, "vector_b64"),  # 3 bytes
    ({"vector_b64": 12, "vector_model": "m"}, "vector_b64"),
    ({"vector_b64": vector_to_b64(np.zeros(4)), "vector_model": "m"}, "vector_b64"),
    ({"vector_b64": vector_to_b64(np.array([-0.0, 0.0])), "vector_model": "m"}, "vector_b64"),
    ({"vector_b64": vector_to_b64(np.array([np.nan, 1.0])), "vector_model": "m"},
     "vector_b64"),
])
def test_a_bad_vector_is_refused_naming_its_key(extra: dict[str, object], field: str) -> None:
    with pytest.raises((InvalidField, MissingField)) as err:
        vector_from_dict({**ITEM, **extra})
    assert err.value.field == field, err.value


def test_the_clients_base64_is_the_services() -> None:
    from portrait_client import vector_b64  # needs httpx only, no numpy

    values = [0.6, -0.8, 1e-3, 3.0]
    assert vector_b64(values) == vector_to_b64(np.array(values))
    parsed = vector_from_dict({"vector_b64": vector_b64(values), "vector_model": "m"})
    assert parsed is not None and parsed.dim == 4
