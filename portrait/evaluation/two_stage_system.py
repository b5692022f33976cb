"""The two-stage system (retrievers + learned ranker) behind the runner's System interface.

Pure: numpy and the learned ranker, no I/O.

The ranker is trained on the split's training events only (each user's stream before their
case, grouped per user in stream order) by :func:`portrait.ranker_training.train_bundle`, the
function the service's retrain calls; profiles are folded by the real fold and ranked by
:func:`portrait.two_stage.catalog_scores`, the path the service serves. Popularity is the
runner's time-respecting prior.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from portrait.evaluation.runner import CaseContext, PortraitSession, PortraitSystem
from portrait.evaluation.splits import Split, stream_key, user_streams
from portrait.events import Event
from portrait.learned_ranker import BoundRanker, RankerBundle, RankerSettings
from portrait.ranker_training import train_bundle
from portrait.retrieval import RetrievalContext, UserQuery, text_index
from portrait.two_stage import can_rank, catalog_scores


class TwoStageSession:
    def __init__(self, system: TwoStageSystem, user_id: str) -> None:
        self.system = system
        self.inner = PortraitSession(system.portrait, user_id)

    def observe(self, events: Sequence[Event]) -> None:
        self.inner.observe(events)

    def scores(self, ctx: CaseContext) -> np.ndarray:
        s = self.system
        p = s.portrait
        rctx = s.context.with_popularity(ctx.popularity())
        query = UserQuery(self.inner.state, p.profile, p.ranking, rctx)
        if not can_rank(query):
            return self.inner.scores(ctx)
        allowed = np.ones(len(p.items), dtype=bool)
        for item in ctx.history:
            r = p.items.row(item)
            if r is not None:
                allowed[r] = False
        return catalog_scores(query, s.ranker, allowed)


class TwoStageSystem:
    """Portrait's profile under ``portrait``'s configuration, ranked by a learned ranker."""

    def __init__(
        self, name: str, portrait: PortraitSystem, bundle: RankerBundle
    ) -> None:
        self.name = name
        self.portrait = portrait
        self.bundle = bundle
        self.ranker: BoundRanker = bundle.bind(portrait.items)
        self.context = RetrievalContext(
            portrait.items, portrait.tag_table, np.zeros(len(portrait.items), np.float32),
            self.ranker.cooc, self.ranker.trans, bundle.settings.sequence_half_life,
            # the evaluation's --ann: retrieval through the approximate indexes
            ann=portrait.ann,
            text_ann=text_index(portrait.items) if portrait.ann is not None else None,
        )

    @classmethod
    def trained(
        cls, name: str, portrait: PortraitSystem, split: Split, settings: RankerSettings
    ) -> TwoStageSystem:
        """Train on ``split``'s training events and wrap ``portrait``."""
        streams = {
            u: tuple(sorted(evs, key=stream_key))
            for u, evs in user_streams(split.train_events).items()
        }
        bundle = train_bundle(
            streams, portrait.items, portrait.tag_table, portrait.texts, portrait.profile,
            portrait.ranking, settings,
        )
        return cls(name, portrait, bundle)

    def session(self, user_id: str) -> TwoStageSession:
        return TwoStageSession(self, user_id)
