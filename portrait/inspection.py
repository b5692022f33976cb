"""Read-only views of a profile for people: a summary, and what changed between two states."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from portrait.config import ProfileConfig
from portrait.interests import TagVocabulary, infer_tags
from portrait.items import ItemIndex
from portrait.profile import ProfileState


def _top(weights: dict[str, float], n: int) -> list[tuple[str, float]]:
    return sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:n]


def summarize(
    state: ProfileState,
    config: ProfileConfig,
    top: int = 20,
    vocabulary: TagVocabulary | None = None,
    *,
    items: ItemIndex,
) -> dict[str, Any]:
    """A JSON-ready description of the profile: what an auditor or the API shows.

    The vectors' norms are those of the profile composed in the item space ``items``. With
    a tag ``vocabulary``, ``inferred_tags`` lists the catalog tags the long-term vector points
    at (zero-shot; see :mod:`portrait.interests`).
    """
    long, short = state.vectors(config, items)
    # Tag prompts are encoded by the text encoder: compare them with the text part only.
    inferred = infer_tags(long[: items.text_dim], vocabulary) if vocabulary else []
    return {
        "user_id": state.user_id,
        "last_seq": state.last_seq,
        "event_count": state.event_count,
        "as_of": state.t_ref,
        "attributes": state.attribute_values(),
        "counts": dict(sorted(state.counts.items())),
        "tags": [
            {"tag": k, "weight": round(v, 6)} for k, v in _top(state.tag_weights(config), top)
        ],
        "keywords": [
            {"keyword": k, "weight": round(v, 6)}
            for k, v in _top(state.keyword_weights(config), top)
        ],
        "inferred_tags": [{"tag": k, "score": v} for k, v in inferred],
        "recent": [
            {"item_id": item, "type": typ, "occurred_at": t, "event_id": eid}
            for t, eid, item, typ in reversed(state.recent)
        ],
        "excluded_count": len(state.excluded),
        "long_norm": float(np.linalg.norm(long)),
        "short_norm": float(np.linalg.norm(short)),
    }


@dataclass(frozen=True, slots=True)
class InterestChange:
    """One interest (tag or keyword) whose weight moved between two profiles."""

    kind: str  # "tag" or "keyword"
    name: str
    before: float
    after: float

    @property
    def delta(self) -> float:
        return self.after - self.before


@dataclass(frozen=True, slots=True)
class ProfileDiff:
    """What changed from ``before`` to ``after``: interests that rose or fell, drift."""

    from_seq: int
    to_seq: int
    events_between: int
    rose: tuple[InterestChange, ...]
    fell: tuple[InterestChange, ...]
    long_similarity: float
    short_similarity: float
    count_changes: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        def change(c: InterestChange) -> dict[str, Any]:
            return {"kind": c.kind, "name": c.name, "before": c.before, "after": c.after,
                    "delta": c.delta}

        return {
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
            "events_between": self.events_between,
            "rose": [change(c) for c in self.rose],
            "fell": [change(c) for c in self.fell],
            "long_similarity": self.long_similarity,
            "short_similarity": self.short_similarity,
            "count_changes": self.count_changes,
        }


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.clip(a @ b / (na * nb), -1.0, 1.0))


def diff(
    before: ProfileState,
    after: ProfileState,
    config: ProfileConfig,
    top: int = 10,
    *,
    items: ItemIndex,
) -> ProfileDiff:
    """Compare two profiles of one user, each decayed to its own ``t_ref``.

    An interest "rose" when its weight grew (including new interests) and "fell" when it
    shrank, through decay or through negative feedback; the largest moves come first. The
    vectors' similarities are measured with both profiles composed in the item space ``items``.
    """
    changes: list[InterestChange] = []
    for kind, b, a in (
        ("tag", before.tag_weights(config), after.tag_weights(config)),
        ("keyword", before.keyword_weights(config), after.keyword_weights(config)),
    ):
        for name in b.keys() | a.keys():
            old, new = b.get(name, 0.0), a.get(name, 0.0)
            if abs(new - old) > 1e-9:
                changes.append(InterestChange(kind, name, old, new))
    rose = sorted((c for c in changes if c.delta > 0), key=lambda c: (-c.delta, c.kind, c.name))
    fell = sorted((c for c in changes if c.delta < 0), key=lambda c: (c.delta, c.kind, c.name))
    counts = {
        k: after.counts.get(k, 0) - before.counts.get(k, 0)
        for k in sorted(before.counts.keys() | after.counts.keys())
        if after.counts.get(k, 0) != before.counts.get(k, 0)
    }
    before_long, before_short = before.vectors(config, items)
    after_long, after_short = after.vectors(config, items)
    return ProfileDiff(
        from_seq=before.last_seq,
        to_seq=after.last_seq,
        events_between=after.event_count - before.event_count,
        rose=tuple(rose[:top]),
        fell=tuple(fell[:top]),
        long_similarity=_cosine(before_long, after_long),
        short_similarity=_cosine(before_short, after_short),
        count_changes=counts,
    )
