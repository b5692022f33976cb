"""The tuned-config document: what ``portrait tune`` writes and the service and ``evaluate`` read.

Pure: the standard library only, no I/O (callers read and write the files).

One reader and one writer, so the format has a single definition::

    {
      "version": 1,
      "created": "...", "dataset": "...",            free metadata, written first
      "profile": {...},                               ProfileConfig.to_dict()
      "profile_config_hash": "...",                   derived, rewritten on every write
      "ranking": {...},                               RankingConfig fields (missing = default)
      "item_vectors": {"model_id": "...", "alpha": 0.93,
                       "collaborative": {...} | null,  CollabSettings, null = text vectors only
                       "blend": "..."},               derived, a description for people
      "validation_metrics": {...}, "search": {...}    free metadata, kept as read
    }

:func:`TunedConfig.from_document` accepts every version up to :data:`DOCUMENT_VERSION` and
raises :class:`~portrait.errors.InvalidInput` subclasses naming the offending key (dotted, such
as ``ranking.short_mix``) for anything else. Keys other than the typed ones are metadata, kept
in order and written back unchanged.

:class:`~portrait.item_space.CollabSettings` is defined with the item space it describes, not
with the algorithm that trains one (:mod:`portrait.collaborative`), so the service can read a
tuned config without importing that algorithm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from portrait.config import ProfileConfig
from portrait.errors import InvalidField, InvalidInput, MissingField
from portrait.item_space import CollabSettings
from portrait.ranking import RankingConfig
from portrait.validation import is_number

DOCUMENT_VERSION = 1
BLEND_DESCRIPTION = "concat(sqrt(1-alpha)*text, sqrt(alpha)*collab), L2-normalised"
# Metadata written before the typed parts, so a reader of the file sees when and on what data
# it was tuned before the numbers.
LEADING_METADATA = ("created", "dataset")
_TYPED_KEYS = frozenset({"version", "profile", "profile_config_hash", "ranking", "item_vectors"})


@dataclass(frozen=True)
class ItemVectorSettings:
    """How the item vectors a configuration was tuned with are built.

    Attributes:
        alpha: share of the collaborative vectors in the blend, in ``[0, 1]`` (0 = text only).
        collaborative: the collaborative vectors' settings; ``None`` = text vectors only.
        model_id: the text encoder the item vectors came from.
    """

    alpha: float = 0.0
    collaborative: CollabSettings | None = None
    model_id: str = ""

    def __post_init__(self) -> None:
        if not is_number(self.alpha) or not 0.0 <= self.alpha <= 1.0:
            raise InvalidField("item_vectors.alpha", "must be a number between 0 and 1")
        if not isinstance(self.model_id, str):
            raise InvalidField("item_vectors.model_id", "must be a string")


@dataclass(frozen=True)
class TunedConfig:
    """A tuned configuration: profile fold, ranking blend, item vectors, and free metadata.

    Attributes:
        profile: how events fold into a profile.
        ranking: how a profile ranks the catalog.
        item_vectors: how the item vectors were built (alpha, collaborative settings).
        metadata: everything else in the document (``created``, ``dataset``,
            ``validation_metrics``, the search summary...), JSON-ready, kept in order.
    """

    profile: ProfileConfig = field(default_factory=ProfileConfig)
    ranking: RankingConfig = field(default_factory=RankingConfig)
    item_vectors: ItemVectorSettings = field(default_factory=ItemVectorSettings)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for key in self.metadata:
            if key in _TYPED_KEYS:
                raise InvalidField(f"metadata.{key}", "is a typed part of the document")

    def to_document(self) -> dict[str, Any]:
        """The JSON-ready document (see the module docstring for its layout)."""
        vectors = self.item_vectors
        doc: dict[str, Any] = {"version": DOCUMENT_VERSION}
        doc.update((k, self.metadata[k]) for k in LEADING_METADATA if k in self.metadata)
        doc["profile"] = self.profile.to_dict()
        doc["profile_config_hash"] = self.profile.config_hash()
        doc["ranking"] = dataclasses.asdict(self.ranking)
        doc["item_vectors"] = {
            "model_id": vectors.model_id,
            "alpha": vectors.alpha,
            "collaborative": (
                vectors.collaborative.to_dict() if vectors.collaborative is not None else None
            ),
            "blend": BLEND_DESCRIPTION,
        }
        doc.update((k, v) for k, v in self.metadata.items() if k not in LEADING_METADATA)
        return doc

    @classmethod
    def from_document(cls, doc: Any) -> TunedConfig:
        """Read a document written by :meth:`to_document` (any version up to the current).

        Raises:
            MissingField: ``version`` or ``profile`` is absent.
            InvalidField: an unsupported version, or a part of the wrong shape or value; the
                field names the key (``ranking.short_mix``, ``item_vectors.alpha``...).
        """
        if not isinstance(doc, Mapping):
            raise InvalidField("document", "must be a JSON object")
        if "version" not in doc:
            raise MissingField("version")
        version = doc["version"]
        if isinstance(version, bool) or not isinstance(version, int) or not (
            1 <= version <= DOCUMENT_VERSION
        ):
            raise InvalidField(
                "version",
                f"unsupported config document version {version!r} "
                f"(this code reads 1 to {DOCUMENT_VERSION})",
            )
        if "profile" not in doc:
            raise MissingField("profile")
        return cls(
            profile=_profile(doc["profile"]),
            ranking=_ranking(doc.get("ranking", {})),
            item_vectors=_item_vectors(doc.get("item_vectors") or {}),
            metadata={k: v for k, v in doc.items() if k not in _TYPED_KEYS},
        )


def _mapping(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidField(name, "must be a JSON object")
    return value


def _profile(value: Any) -> ProfileConfig:
    data = _mapping(value, "profile")
    try:
        return ProfileConfig.from_dict(data)
    except InvalidInput as exc:
        raise InvalidField(f"profile.{exc.field}", exc.reason) from None
    except (TypeError, ValueError) as exc:
        # a value of a type the config's own checks compare without testing (a string weight)
        raise InvalidField("profile", str(exc)) from None


def _ranking(value: Any) -> RankingConfig:
    data = _mapping(value, "ranking")
    known = {f.name for f in dataclasses.fields(RankingConfig)}
    for key, item in data.items():
        if key not in known:
            raise InvalidField(f"ranking.{key}", "unknown ranking config field")
        if not is_number(item):
            raise InvalidField(f"ranking.{key}", "must be a number")
    try:
        return RankingConfig(**data)
    except InvalidInput as exc:
        raise InvalidField(f"ranking.{exc.field}", exc.reason) from None


def _item_vectors(value: Any) -> ItemVectorSettings:
    data = _mapping(value, "item_vectors")
    collab_data = data.get("collaborative")
    collab = (
        CollabSettings.from_dict(
            _mapping(collab_data, "item_vectors.collaborative"), "item_vectors.collaborative."
        )
        if collab_data
        else None
    )
    alpha = data.get("alpha", 0.0)
    if not is_number(alpha):
        raise InvalidField("item_vectors.alpha", "must be a number between 0 and 1")
    return ItemVectorSettings(float(alpha), collab, data.get("model_id") or "")
