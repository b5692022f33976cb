"""Profile state <-> bytes, for snapshots (msgpack; vectors as raw float64 bytes)."""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

from portrait.errors import InvalidField
from portrait.profile import ProfileState

SNAPSHOT_FORMAT = 1


def state_to_bytes(state: ProfileState) -> bytes:
    """Serialise a profile state exactly (floats and vectors bit for bit)."""
    doc: dict[str, Any] = {
        "format": SNAPSHOT_FORMAT,
        "user_id": state.user_id,
        "dim": state.dim,
        "anchor": state.anchor,
        "t_ref": state.t_ref,
        "long": state.long_acc.astype("<f8").tobytes(),
        "short": state.short_acc.astype("<f8").tobytes(),
        "tags": state.tags,
        "keywords": state.keywords,
        "counts": state.counts,
        "recent": [list(r) for r in state.recent],
        "excluded": sorted(state.excluded),
        "attributes": {k: list(v) for k, v in state.attributes.items()},
        "last_seq": state.last_seq,
        "event_count": state.event_count,
    }
    return msgpack.packb(doc, use_bin_type=True)


def state_from_bytes(data: bytes) -> ProfileState:
    """The profile state serialised by :func:`state_to_bytes`."""
    try:
        doc = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise InvalidField("snapshot", f"not valid msgpack: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != SNAPSHOT_FORMAT:
        raise InvalidField("snapshot.format", f"expected format {SNAPSHOT_FORMAT}")
    state = ProfileState(doc["user_id"], int(doc["dim"]))
    state.anchor = doc["anchor"]
    state.t_ref = doc["t_ref"]
    state.long_acc = np.frombuffer(doc["long"], dtype="<f8").astype(np.float64)
    state.short_acc = np.frombuffer(doc["short"], dtype="<f8").astype(np.float64)
    if state.long_acc.shape != (state.dim,) or state.short_acc.shape != (state.dim,):
        raise InvalidField("snapshot.dim", "vector length does not match dim")
    state.tags = dict(doc["tags"])
    state.keywords = dict(doc["keywords"])
    state.counts = dict(doc["counts"])
    state.recent = [tuple(r) for r in doc["recent"]]  # type: ignore[misc]
    state.excluded = set(doc["excluded"])
    state.attributes = {k: tuple(v) for k, v in doc["attributes"].items()}  # type: ignore[misc]
    state.last_seq = int(doc["last_seq"])
    state.event_count = int(doc["event_count"])
    return state
