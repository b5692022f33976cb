"""The ids in request paths, checked as the domain checks them (one place for every route)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from portrait.catalog import MAX_ITEM_ID_LENGTH
from portrait.events import MAX_ID_LENGTH
from portrait.validation import check_id


# Async, so FastAPI checks them inline: a plain function would be run in its thread pool, a
# thread hop on every request.
async def _user_id(user_id: str = Path(..., description="The user's id.")) -> str:
    check_id("user_id", user_id, MAX_ID_LENGTH)
    return user_id


async def _item_id(item_id: str = Path(..., description="The item's id.")) -> str:
    check_id("item_id", item_id, MAX_ITEM_ID_LENGTH)
    return item_id


UserId = Annotated[str, Depends(_user_id)]
ItemId = Annotated[str, Depends(_item_id)]
