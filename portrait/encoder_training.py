"""What the text encoder is fine-tuned on: next-item examples cut from the event log.

Pure: the standard library only, no I/O.

Each example is one moment of one user's stream: the items they wanted before (at most
``history``, oldest first), their own recent words (reviews and searches, at most
``user_texts``), and the item they wanted next. The encoder is then trained so that the
profile it would build from the history (a recency-weighted sum of the items' vectors and
the user's text vectors, as :mod:`portrait.profile` composes it) lies close to the next item
(:mod:`encoding.fine_tune`). Training on the same composition the service ranks with, not on
one concatenated history text, keeps the objective and the serving path one thing.

The split is by time: a cut at the ``1 - validation_share`` quantile of the targets' times;
examples whose target is after the cut validate (one per user, the first after the cut), the
rest train. Nothing after the cut reaches training, so the validation figure is what the
model does on behaviour it has not seen, as a deployed encoder meets it.

Only the events given are used: the service builds the set from the log as it is at training
time, so an erased user's events (deleted from the log) are never in it.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from portrait.errors import InvalidField, PortraitError
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent, event_text


class NotEnoughText(PortraitError):
    """Too little behaviour to fine-tune on (the message says what was found and needed)."""


@dataclass(frozen=True)
class ExampleSettings:
    """How examples are cut from the log.

    Attributes:
        history: the most recent wanted items an example keeps.
        user_texts: the most recent reviews/searches an example keeps.
        validation_share: the share of targets (by time) after the cut.
        max_per_user: at most this many training examples per user (the most recent), so a
            few heavy users do not make the model theirs.
        max_validation: validation examples kept (a seeded sample when there are more).
        min_train: fewer training examples than this is refused.
        min_validation: fewer validation examples than this is refused.
        seed: for the validation sample.
    """

    history: int = 5
    user_texts: int = 2
    validation_share: float = 0.15
    max_per_user: int = 60
    max_validation: int = 600
    min_train: int = 200
    min_validation: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("history", "max_per_user", "max_validation", "min_train", "min_validation"):
            if getattr(self, name) < 1:
                raise InvalidField(name, "must be >= 1")
        if self.user_texts < 0:
            raise InvalidField("user_texts", "must be >= 0")
        if not 0.0 < self.validation_share < 1.0:
            raise InvalidField("validation_share", "must be in (0, 1)")


@dataclass(frozen=True)
class NextItemExample:
    """One moment of a user's stream: what they wanted and wrote before, and what came next."""

    user_id: str
    history: tuple[str, ...]
    user_texts: tuple[str, ...]
    target: str
    occurred_at: float


@dataclass(frozen=True)
class TrainingSet:
    """Examples split by time, and what they were cut from (for the checkpoint's record)."""

    train: list[NextItemExample]
    validation: list[NextItemExample]
    cut: float
    users: int
    events: int
    first_at: float
    last_at: float
    settings: ExampleSettings = field(default_factory=ExampleSettings)

    def describe(self) -> dict[str, float | int]:
        return {
            "events": self.events, "users": self.users, "train_examples": len(self.train),
            "validation_examples": len(self.validation), "first_event_at": self.first_at,
            "last_event_at": self.last_at, "validation_after": self.cut,
        }


def _user_examples(
    events: Sequence[Event], catalog: Collection[str], settings: ExampleSettings
) -> list[NextItemExample]:
    """Every next-item example of one user's events (already in stream order).

    Stream order is ``(occurred_at, event_id)``, as the evaluation orders a user's events
    (Amazon's reviews are dated to the day, so one day's purchases are a sequence too). A
    review of the item being predicted is never among the user's words for it.
    """
    out: list[NextItemExample] = []
    wanted: list[str] = []
    texts: list[tuple[str | None, str]] = []  # (item reviewed, text)
    for ev in events:
        item = ev.item_id if isinstance(ev, ItemEvent) else None
        positive = item is not None and ev.TYPE in POSITIVE_ITEM_TYPES and item in catalog
        if positive and wanted and item not in wanted:
            own = [t for about, t in texts if about != item]
            out.append(NextItemExample(
                ev.user_id, tuple(wanted[-settings.history:]),
                tuple(own[-settings.user_texts:]) if settings.user_texts else (),
                str(item), ev.occurred_at,
            ))
        text = event_text(ev)
        if text is not None and text.strip():
            texts.append((item, text))
        if positive and item is not None:
            if item in wanted:
                wanted.remove(item)
            wanted.append(item)
    return out


def build_training_set(
    events: Sequence[Event], catalog: Collection[str], settings: ExampleSettings | None = None
) -> TrainingSet:
    """Next-item examples of ``events`` over the items in ``catalog``, split by time.

    Raises:
        NotEnoughText: fewer training or validation examples than the settings ask.
    """
    settings = settings or ExampleSettings()
    if not events:
        raise NotEnoughText("the event log is empty")
    by_user: dict[str, list[Event]] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, []).append(ev)
    examples: list[NextItemExample] = []
    for user_events in by_user.values():
        user_events.sort(key=lambda e: (e.occurred_at, e.event_id))
        examples.extend(_user_examples(user_events, catalog, settings))
    if not examples:
        raise NotEnoughText(
            f"no next-item examples in {len(events)} events: every user needs two items of "
            "the catalog they wanted, one after the other")
    times = sorted(e.occurred_at for e in examples)
    cut = times[min(len(times) - 1, int(len(times) * (1.0 - settings.validation_share)))]
    train_by_user: dict[str, list[NextItemExample]] = {}
    validation: dict[str, NextItemExample] = {}
    for ex in examples:
        if ex.occurred_at < cut:
            train_by_user.setdefault(ex.user_id, []).append(ex)
        elif ex.user_id not in validation or ex.occurred_at < validation[ex.user_id].occurred_at:
            validation[ex.user_id] = ex
    train = [ex for exs in train_by_user.values() for ex in exs[-settings.max_per_user:]]
    val = sorted(validation.values(), key=lambda e: (e.user_id, e.occurred_at))
    if len(val) > settings.max_validation:
        val = sorted(random.Random(settings.seed).sample(val, settings.max_validation),
                     key=lambda e: (e.user_id, e.occurred_at))
    if len(train) < settings.min_train or len(val) < settings.min_validation:
        raise NotEnoughText(
            f"{len(train)} training and {len(val)} validation examples from "
            f"{len(by_user)} users; fine-tuning needs at least {settings.min_train} and "
            f"{settings.min_validation}")
    return TrainingSet(
        train=train, validation=val, cut=cut, users=len(by_user), events=len(events),
        first_at=min(e.occurred_at for e in events), last_at=max(e.occurred_at for e in events),
        settings=settings,
    )


__all__ = [
    "ExampleSettings", "NextItemExample", "NotEnoughText", "TrainingSet", "build_training_set",
]
