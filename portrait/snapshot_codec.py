"""Profile state <-> bytes, for snapshots (msgpack; weights and vectors as raw float64 bytes).

Format 2 stores the basis-independent state of :mod:`portrait.profile`: per-item weights by
item id and text accumulators, no item vectors. Format 1 held item-vector sums, which cannot
be turned into per-item weights; decoding it raises :class:`SnapshotIncompatible`, and the
host then replays the user's log from the start (a snapshot is only a shortcut).

``text_model`` (the encoder whose vectors the text accumulators sum) was added to format 2
later: a snapshot without it decodes with ``text_model`` None, which a loader must treat as
unknown and, when the snapshot holds text, not use (see :mod:`actors.profile_loader`).
"""

from __future__ import annotations

from sys import intern
from typing import Any

import msgpack
import numpy as np

from portrait.errors import InvalidField, SnapshotIncompatible
from portrait.profile import ProfileState

SNAPSHOT_FORMAT = 2


def state_to_bytes(state: ProfileState) -> bytes:
    """Serialise a profile state exactly (floats and weights bit for bit)."""
    n = len(state.item_slots)
    doc: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "user_id": state.user_id,
        "text_dim": state.text_dim,
        "text_model": state.text_model,
        "anchor": state.anchor,
        "t_ref": state.t_ref,
        # Ids in column order (the dict's insertion order), then the long row and the short row.
        "item_ids": list(state.item_slots),
        "item_weights": np.ascontiguousarray(state.item_weights[:, :n], dtype="<f8").tobytes(),
        "text": None if state.text_acc is None else state.text_acc.astype("<f8").tobytes(),
        "tags": state.tags,
        "keywords": state.keywords,
        "counts": state.counts,
        "recent": [list(r) for r in state.recent],
        "excluded": sorted(state.excluded),
        "attributes": {k: list(v) for k, v in state.attributes.items()},
        "last_seq": state.last_seq,
        "event_count": state.event_count,
    }
    packed: bytes = msgpack.packb(doc, use_bin_type=True)
    return packed


def state_from_bytes(data: bytes) -> ProfileState:
    """The profile state serialised by :func:`state_to_bytes`.

    Raises:
        SnapshotIncompatible: the bytes are a snapshot of another format (an older one).
        InvalidField: the bytes are not a snapshot at all, or an inconsistent one.
    """
    try:
        doc = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidField("snapshot", f"not valid msgpack: {exc}") from exc
    if not isinstance(doc, dict) or "format" not in doc:
        raise InvalidField("snapshot.format", "not a profile snapshot")
    if doc["format"] != SNAPSHOT_FORMAT:
        raise SnapshotIncompatible(
            f"snapshot format {doc['format']!r} cannot be read by format {SNAPSHOT_FORMAT}; "
            "replay the user's log instead"
        )
    text_dim = doc["text_dim"]
    state = ProfileState(doc["user_id"], None if text_dim is None else int(text_dim))
    text_model = doc.get("text_model")
    state.text_model = None if text_model is None else str(text_model)
    state.anchor = doc["anchor"]
    state.t_ref = doc["t_ref"]
    ids = doc["item_ids"]
    # Interned like the fold's (see portrait.profile): one string per item per process.
    state.item_slots = {intern(item_id): slot for slot, item_id in enumerate(ids)}
    if len(state.item_slots) != len(ids):
        raise InvalidField("snapshot.item_ids", "item ids must be unique")
    weights = np.frombuffer(doc["item_weights"], dtype="<f8")
    if weights.size != 2 * len(ids):
        raise InvalidField("snapshot.item_weights", "expected two weights per item id")
    # A writable native copy; the fold grows it by doubling when new items arrive.
    state.item_weights = weights.astype(np.float64).reshape(2, len(ids))
    if doc["text"] is not None:
        text = np.frombuffer(doc["text"], dtype="<f8").astype(np.float64)
        if text_dim is None or text.size != 2 * int(text_dim):
            raise InvalidField("snapshot.text", "text accumulators do not match text_dim")
        state.text_acc = text.reshape(2, int(text_dim))
    state.tags = dict(doc["tags"])
    state.keywords = dict(doc["keywords"])
    state.counts = dict(doc["counts"])
    state.recent = [(t, eid, intern(item), intern(typ)) for t, eid, item, typ in doc["recent"]]
    state.excluded = {intern(item_id) for item_id in doc["excluded"]}
    state.attributes = {
        k: (float(v[0]), str(v[1]), str(v[2])) for k, v in doc["attributes"].items()
    }
    state.last_seq = int(doc["last_seq"])
    state.event_count = int(doc["event_count"])
    return state
