"""The JSON files offline reads and writes: tuned-config files and result documents.

Tuned configs go through the single reader and writer of the format,
:class:`portrait.tuned_config.TunedConfig`; this module adds the file and the conversion to
and from the search's :class:`~portrait.evaluation.tuning.PortraitParams`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from portrait.errors import InvalidField, InvalidInput
from portrait.evaluation.tuning import PortraitParams
from portrait.item_space import CollabSettings
from portrait.tuned_config import ItemVectorSettings, TunedConfig


class InvalidConfigFile(InvalidField):
    """A tuned-config file whose document is invalid; ``field`` is ``"<file name>:<key>"``."""


def json_default(o: Any) -> Any:
    """``json.dumps``'s ``default`` for numpy scalars and arrays, sets and tuples."""
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(type(o).__name__)


def write_json(path: Path, doc: Mapping[str, Any], *, final_newline: bool = False) -> None:
    """Write ``doc`` to ``path`` as indented JSON (numpy values converted)."""
    text = json.dumps(doc, indent=2, default=json_default)
    path.write_text(text + "\n" if final_newline else text)


def read_tuned_config(path: Path) -> TunedConfig:
    """The tuned config stored in ``path``.

    Raises:
        OSError: the file cannot be read.
        ValueError: the file is not JSON.
        InvalidConfigFile: the document is invalid.
    """
    doc = json.loads(Path(path).read_text())
    try:
        return TunedConfig.from_document(doc)
    except InvalidInput as exc:
        raise InvalidConfigFile(f"{Path(path).name}:{exc.field}", exc.reason) from None


def portrait_params(config: TunedConfig) -> tuple[PortraitParams, CollabSettings | None]:
    """The search's parameters and the collaborative settings of a tuned config."""
    vectors = config.item_vectors
    return PortraitParams(config.profile, config.ranking, vectors.alpha), vectors.collaborative


def tuned_config(
    params: PortraitParams,
    *,
    dataset: str,
    created: str,
    model_id: str,
    collab: CollabSettings | None,
    validation_metrics: Mapping[str, float],
    extra: Mapping[str, Any] | None = None,
) -> TunedConfig:
    """A tuning result as a tuned config.

    Args:
        params: the chosen parameters.
        dataset: the dataset's name.
        created: when, as an ISO-8601 timestamp.
        model_id: the text encoder of the item vectors.
        collab: the collaborative settings, ``None`` when tuned on text vectors only (alpha
            is then recorded as 0, whatever the search held).
        validation_metrics: the chosen parameters' validation metrics.
        extra: further metadata (search summary, split, command...).
    """
    metadata: dict[str, Any] = {
        "created": created,
        "dataset": dataset,
        "validation_metrics": dict(validation_metrics),
        **(extra or {}),
    }
    vectors = ItemVectorSettings(params.alpha if collab is not None else 0.0, collab, model_id)
    return TunedConfig(params.profile, params.ranking, vectors, metadata)
