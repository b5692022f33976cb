"""Training the learned ranker from an event log: a time-based split per user.

Pure: no I/O; the caller hands over the users' event streams (what the retrain reads from the
log, or an evaluation split's training events).

For each user with at least three distinct items, each of their last few new items
(``labels_per_user``, never more than ``max_label_share`` of their items, so that the
histories the neighbour models learn from keep most of the data) is a *label* in turn, and
the profile that ranks for it is folded from every event before its first interaction (their
own stream, in time order: nothing from their future reaches their features). The neighbour
models used to build the training features are fitted on the histories before each user's
first label only, so the transition from a user's last item to their label is not already in
them (that would teach the ranker to trust co-occurrence more than it deserves at serving
time, when the next item is unknown). Popularity is counted from every
event before each label's time, as the evaluation and the service count it. The bundle that
serves is then fitted on every event.

Users are held out for early stopping (:func:`portrait.learned_ranker.train_model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from portrait.config import ProfileConfig
from portrait.covisitation import Neighbours, cooccurrence, transitions
from portrait.events import POSITIVE_ITEM_TYPES, Event, ItemEvent, RecordedEvent
from portrait.fold import fold
from portrait.items import ItemIndex
from portrait.learned_ranker import RankerBundle, RankerSettings, TrainingSet, train_model
from portrait.ports import TextFeatures
from portrait.profile import ProfileState
from portrait.progress import Progress
from portrait.ranker_features import features
from portrait.ranking import RankingConfig, TagTable, popularity_scores
from portrait.retrieval import RetrievalContext, UserQuery, exact_retrievers, retrieve

MIN_ITEMS = 3  # distinct items a user needs: two of history and the label


def item_sequence(stream: Sequence[Event], row_of: Mapping[str, int]) -> np.ndarray:
    """The catalog rows a user reached, each once, in the order of first interaction."""
    seen: dict[int, None] = {}
    for ev in stream:
        if isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES:
            r = row_of.get(ev.item_id)
            if r is not None and r not in seen:
                seen[r] = None
    return np.fromiter(seen, dtype=np.int64, count=len(seen))


def fit_neighbours(
    streams: Mapping[str, Sequence[Event]], items: ItemIndex, settings: RankerSettings
) -> tuple[Neighbours, Neighbours]:
    """Co-occurrence and transition neighbours over ``items``' rows from these streams."""
    row_of = {item: i for i, item in enumerate(items.ids)}
    seqs = [s for s in (item_sequence(st, row_of) for st in streams.values()) if s.size]
    return (
        cooccurrence(seqs, len(items), settings.neighbours),
        transitions(seqs, len(items), settings.neighbours, settings.window),
    )


def label_cuts(stream: Sequence[Event], labels: int, max_share: float = 1.0) -> list[int]:
    """Indices in ``stream`` of the first interactions with the user's last new items, oldest
    first: at most ``labels`` of them and at most ``max_share`` of the user's items (at least
    one), each with at least ``MIN_ITEMS - 1`` distinct items before it."""
    first: dict[str, int] = {}
    for i, ev in enumerate(stream):
        if isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES:
            first.setdefault(ev.item_id, i)
    starts = sorted(first.values())
    n = min(labels, max(1, int(len(starts) * max_share)))
    return starts[max(MIN_ITEMS - 1, len(starts) - n):]


class _PopularityClock:
    """The popularity prior from the positive item events strictly before a time (queried
    at non-decreasing times, so counting is incremental)."""

    def __init__(
        self, streams: Mapping[str, Sequence[Event]], row_of: Mapping[str, int], n_items: int
    ) -> None:
        pairs = sorted(
            (ev.occurred_at, r)
            for stream in streams.values() for ev in stream
            if isinstance(ev, ItemEvent) and ev.TYPE in POSITIVE_ITEM_TYPES
            and (r := row_of.get(ev.item_id)) is not None
        )
        self.times = np.asarray([t for t, _ in pairs], dtype=np.float64)
        self.rows = np.asarray([r for _, r in pairs], dtype=np.int64)
        self.counts = np.zeros(n_items)
        self.counted = 0
        self.popularity = popularity_scores(self.counts)

    def until(self, t: float) -> np.ndarray:
        end = int(np.searchsorted(self.times, t, side="left"))
        if end > self.counted:
            self.counts += np.bincount(self.rows[self.counted:end], minlength=self.counts.size)
            self.counted = end
            self.popularity = popularity_scores(self.counts)
        return self.popularity


def training_set(
    streams: Mapping[str, Sequence[Event]],
    items: ItemIndex,
    tag_table: TagTable,
    texts: Mapping[str, TextFeatures],
    profile: ProfileConfig,
    ranking: RankingConfig,
    settings: RankerSettings,
    progress: Progress | None = None,
) -> TrainingSet:
    """Feature rows for every sampled user whose next item the retrievers find.

    Args:
        streams: each user's events in time order (``(occurred_at, event_id)``).
    """
    cuts = {
        u: label_cuts(s, settings.labels_per_user, settings.max_label_share)
        for u, s in streams.items()
    }
    histories = {u: (s[: c[0]] if (c := cuts[u]) else s) for u, s in streams.items()}
    cooc, trans = fit_neighbours(histories, items, settings)
    row_of = {item: i for i, item in enumerate(items.ids)}
    clock = _PopularityClock(streams, row_of, len(items))
    ctx = RetrievalContext(
        items, tag_table, clock.popularity, cooc, trans, settings.sequence_half_life
    )
    retrievers = exact_retrievers(settings.retrievers)
    eligible = sorted(u for u, c in cuts.items() if c)
    rng = np.random.default_rng(settings.seed)
    if len(eligible) > settings.max_groups:
        eligible = sorted(rng.choice(eligible, size=settings.max_groups, replace=False).tolist())
    # Labels in time order, so that popularity is counted up to each label's time as the
    # evaluation and the service count it (what had happened by then, nothing later).
    labels = sorted((streams[u][c].occurred_at, u, c) for u in eligible for c in cuts[u])
    states: dict[str, tuple[ProfileState, int, list[int]]] = {}
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    groups: list[int] = []
    considered = 0
    for n, (at, user, cut) in enumerate(labels):
        stream = streams[user]
        state, folded, seen = states.get(user) or (ProfileState(user, items.text_dim), 0, [])
        label = stream[cut]
        assert isinstance(label, ItemEvent)
        # the profile as it stood just before this label: its own past, nothing later
        recs = [
            RecordedEvent(i + 1, i + 1, ev.occurred_at, ev)
            for i, ev in enumerate(stream[folded:cut], start=folded)
        ]
        fold(state, recs, profile, items, texts)
        seen += [
            r for ev in stream[folded:cut]
            if isinstance(ev, ItemEvent) and (r := row_of.get(ev.item_id)) is not None
        ]
        states[user] = (state, cut, seen)
        target = row_of.get(label.item_id)
        if target is not None:
            allowed = np.ones(len(items), dtype=bool)
            allowed[seen] = False
            ctx.popularity = clock.until(at)
            query = UserQuery(state, profile, ranking, ctx)
            cands = retrieve(query, retrievers, settings.candidates, allowed)
            hit = cands.rows == target
            considered += 1
            if hit.any():
                xs.append(features(query, cands, settings.extras))
                ys.append(hit.astype(np.float32))
                groups.append(int(cands.rows.size))
        if progress is not None:
            progress(n + 1, len(labels))
    width = len(settings.feature_names)
    return TrainingSet(
        np.concatenate(xs) if xs else np.zeros((0, width), np.float32),
        np.concatenate(ys) if ys else np.zeros(0, np.float32),
        np.asarray(groups, dtype=np.int64),
        considered,
        len(groups),
    )


def train_bundle(
    streams: Mapping[str, Sequence[Event]],
    items: ItemIndex,
    tag_table: TagTable,
    texts: Mapping[str, TextFeatures],
    profile: ProfileConfig,
    ranking: RankingConfig,
    settings: RankerSettings,
    progress: Progress | None = None,
) -> RankerBundle:
    """Train a ranker on the users' last items and fit its serving neighbours on every event.

    Raises:
        NotEnoughTraining: too few users to learn from (the blend keeps serving).
    """
    data = training_set(streams, items, tag_table, texts, profile, ranking, settings, progress)
    model, metrics = train_model(data, settings)
    cooc, trans = fit_neighbours(streams, items, settings)
    return RankerBundle(model, settings, settings.feature_names, tuple(items.ids), cooc, trans,
                        metrics)
