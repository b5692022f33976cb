"""A fine-tuned encoder on disk: a sentence-transformers folder plus the record that names it.

``portrait train-encoder`` writes a folder vLLM loads with the pooling runner, exactly like the
shipped models' folders (``config.json``, ``model.safetensors``, the tokenizer files,
``modules.json`` and the mean-pooling config), and next to them :data:`RECORD_FILE`: the
version's name, the model id its vectors and cached features are keyed by, the base model,
the width, digests of the tokenizer and the weights, the data it was trained on and its
validation figures.

:func:`verify_checkpoint` is run before a folder is ever loaded: a folder whose width,
tokenizer or weights differ from its record (a copy that was edited, a record moved next to
another model) is refused, because vectors of a different space under the record's model id
would silently mix with the real ones. Nothing here imports torch or vLLM.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from encoding.settings import MODELS, EncoderSettings

RECORD_FILE = "portrait_encoder.json"
RECORD_FORMAT = 1
# The files that decide how text becomes token ids; whichever of them a folder has are hashed.
TOKENIZER_FILES = (
    "tokenizer.json", "vocab.txt", "sentencepiece.bpe.model", "tokenizer_config.json",
    "special_tokens_map.json",
)


class CheckpointMismatch(ValueError):
    """The folder is not the encoder its record describes (or has no valid record)."""


@dataclass(frozen=True)
class EncoderRecord:
    """What a fine-tuned encoder is (see the module docstring).

    Attributes:
        name: the version's human name (unique per deployment).
        model_id: stored next to every vector and cached text feature it produces.
        base_model: the model id of the encoder it was fine-tuned from.
        base_name: the key of :data:`encoding.settings.MODELS` of the base (its prompts).
        dim: the width of its vectors.
        max_length: the token window it was trained with.
        tokenizer_sha256, weights_sha256: digests of the folder's tokenizer files and weights.
        created_at: Unix seconds.
        data: what it was trained on (events, users, examples, time range).
        validation: its validation figures (text-only NDCG@10 of the base and of this one).
        training: the training settings, seconds and device.
    """

    name: str
    model_id: str
    base_model: str
    base_name: str
    dim: int
    max_length: int
    tokenizer_sha256: str
    weights_sha256: str
    created_at: float
    data: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, **asdict(self)}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> EncoderRecord:
        if not isinstance(doc, Mapping):
            raise CheckpointMismatch("the encoder record must be a JSON object")
        if doc.get("format") != RECORD_FORMAT:
            raise CheckpointMismatch(
                f"encoder record format {doc.get('format')!r}; this version reads {RECORD_FORMAT}")
        try:
            record = cls(
                name=str(doc["name"]), model_id=str(doc["model_id"]),
                base_model=str(doc["base_model"]), base_name=str(doc["base_name"]),
                dim=int(doc["dim"]), max_length=int(doc["max_length"]),
                tokenizer_sha256=str(doc["tokenizer_sha256"]),
                weights_sha256=str(doc["weights_sha256"]), created_at=float(doc["created_at"]),
                data=dict(doc.get("data") or {}), validation=dict(doc.get("validation") or {}),
                training=dict(doc.get("training") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointMismatch(f"encoder record: missing or bad field {exc}") from None
        if record.base_name not in MODELS:
            raise CheckpointMismatch(
                f"encoder record: base_name {record.base_name!r} is not one of {', '.join(MODELS)}")
        if not record.name.strip() or not record.model_id.strip():
            raise CheckpointMismatch("encoder record: name and model_id must be non-empty")
        if record.dim < 1:
            raise CheckpointMismatch("encoder record: dim must be >= 1")
        return record


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0")
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def tokenizer_digest(folder: Path) -> str:
    """sha256 over the tokenizer files the folder has (names and bytes, in a fixed order)."""
    files = [folder / n for n in TOKENIZER_FILES if (folder / n).is_file()]
    if not files:
        raise CheckpointMismatch(f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)})")
    return _sha256_files(files)


def weights_digest(folder: Path) -> str:
    """sha256 over the folder's ``*.safetensors`` files (sorted by name)."""
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatch(f"{folder}: no *.safetensors weights")
    return _sha256_files(files)


def folder_width(folder: Path) -> int:
    """The width of the vectors the folder's model produces: the pooling module's dimension,
    else the transformer's hidden size."""
    pooling = folder / "1_Pooling" / "config.json"
    try:
        if pooling.is_file():
            return int(json.loads(pooling.read_text())["word_embedding_dimension"])
        return int(json.loads((folder / "config.json").read_text())["hidden_size"])
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointMismatch(f"{folder}: cannot read the model's width ({exc})") from None


def read_record(folder: Path) -> EncoderRecord:
    path = Path(folder) / RECORD_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointMismatch(f"{folder}: no {RECORD_FILE}; not a Portrait encoder") from None
    except (OSError, ValueError) as exc:
        raise CheckpointMismatch(f"{path}: unreadable ({exc})") from None
    return EncoderRecord.from_dict(doc)


def write_record(folder: Path, record: EncoderRecord) -> Path:
    path = Path(folder) / RECORD_FILE
    path.write_text(json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n",
                    encoding="utf-8")
    return path


def verify_checkpoint(folder: Path, record: EncoderRecord) -> None:
    """Raise :class:`CheckpointMismatch` unless the folder is the model its record describes."""
    folder = Path(folder)
    width = folder_width(folder)
    if width != record.dim:
        raise CheckpointMismatch(
            f"{folder}: the model produces {width}-dimensional vectors, its record says "
            f"{record.dim}")
    if tokenizer_digest(folder) != record.tokenizer_sha256:
        raise CheckpointMismatch(f"{folder}: the tokenizer differs from the one recorded")
    if weights_digest(folder) != record.weights_sha256:
        raise CheckpointMismatch(f"{folder}: the weights differ from the ones recorded")


def settings_for(folder: Path, record: EncoderRecord, base: EncoderSettings) -> EncoderSettings:
    """``base`` (batching, dtype, placement) loading this folder under the record's model id,
    with the base model's prompts and the token window it was trained with."""
    return base.model_copy(update={
        "model": record.base_name, "model_path": str(folder), "model_id": record.model_id,
        "query_prefix": None, "passage_prefix": None, "max_length": record.max_length,
    })


__all__ = [
    "RECORD_FILE", "CheckpointMismatch", "EncoderRecord", "folder_width", "read_record",
    "settings_for", "tokenizer_digest", "verify_checkpoint", "weights_digest", "write_record",
]
