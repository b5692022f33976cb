"""``GET /v1/users/{id}/summary``: the profile in two or three plain sentences.

The facts come from the owning shard's profile summary and the catalog (titles and tags of
the recently touched items); :class:`serve.summary_service.SummaryService` writes the text
(the model when it is on and fit, else the template). ``source`` says which.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from portrait.errors import EncoderUnavailable
from serve.api.auth import requires
from serve.api.context import ApiContext
from serve.api.errors import unknown_user
from serve.api.path_params import UserId
from serve.summary_service import SummaryService

# The profile read for the facts: more tags and keywords than the text uses, so that the
# grounding check allows every interest the profile holds, not only the strongest three.
PROFILE_TOP = 50
# Recent items looked up in the catalog (dismissed or unknown ones are skipped, so a few
# more than the three a summary names).
RECENT_LOOKUPS = 10

_TEMPLATE_ONLY = SummaryService(None)


class SummaryFactsBody(BaseModel):
    last_seq: int
    event_count: int
    tags: list[str]
    keywords: list[str]
    recent_titles: list[str]
    attributes: dict[str, str]


class SummaryResponse(BaseModel):
    user_id: str
    summary: str = Field(description="Two or three sentences about the user's profile.")
    source: str = Field(description="'model' (written by the summary model and checked) or "
                                    "'template' (built from the facts alone).")
    model: str | None = Field(description="The model's id when source is 'model'.")
    fallback_reason: str | None = Field(
        description="Why the template answered: disabled, unavailable, timeout, ungrounded "
                    "(the model named an interest the profile lacks), unsupported (a name, "
                    "number or gender no fact supports), loops, empty.")
    cached: bool
    facts: SummaryFactsBody
    interests_named: list[str] | None = None
    rejected: dict[str, Any] | None = None


async def _recent_items(ctx: ApiContext, summary: dict[str, Any]
                        ) -> tuple[dict[str, str], set[str]]:
    """Titles and tags of the recently touched items; none while the catalog is away (the
    summary then names no titles)."""
    wanted: list[str] = []
    for r in summary.get("recent", ()):
        if r["item_id"] not in wanted:
            wanted.append(r["item_id"])
        if len(wanted) == RECENT_LOOKUPS:
            break
    try:
        catalog = ctx.catalog
    except EncoderUnavailable:
        return {}, set()
    records = await asyncio.gather(*(catalog.get(i) for i in wanted))
    titles = {r.item_id: r.title for r in records if r is not None}
    tags = {t for r in records if r is not None for t in r.tags}
    return titles, tags


def install(app: FastAPI) -> None:
    @app.get("/v1/users/{user_id}/summary", response_model=SummaryResponse, tags=["profiles"],
             dependencies=[requires("profiles:read")])
    async def summary(user_id: UserId,
                      request: Request) -> JSONResponse:
        """The profile in two or three sentences, from its strongest tags and keywords, the
        recently chosen items and the attributes: written by the summary model when it is
        on (``PORTRAIT_SUMMARIES``) and names only interests the profile holds, else by a
        template from the same facts. Cached per (user, last_seq, model)."""
        ctx: ApiContext = request.app.state.portrait
        await ctx.ready()
        stored = ctx.internal(user_id)
        # Routed by the owner, re-routed if a resize moves the user meanwhile.
        report = await ctx.on_owner(stored,
                                    lambda s: s.profile(stored, None, None, PROFILE_TOP))
        profile = report.summary
        if profile["event_count"] == 0:
            raise await unknown_user(ctx, user_id)
        titles, tags = await _recent_items(ctx, profile)
        tags.update(t["tag"] for t in profile.get("inferred_tags", ()))  # catalog tags too
        service = ctx.summaries or _TEMPLATE_ONLY
        answer = await service.summary(stored, profile, titles, tags)
        return JSONResponse({"user_id": user_id, **answer})
