"""Importing a data set's items into the catalog, with progress bars (CLI and first run)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from portrait.catalog import ItemRecord
from portrait.progress import on_bar
from storage.catalog import ItemCatalog, UpsertResult


async def import_items(catalog: ItemCatalog, records: Sequence[ItemRecord]) -> UpsertResult:
    """Upsert ``records`` (encoding what changed), then re-encode items a previous model
    embedded; both with a progress bar."""
    from tqdm import tqdm

    with tqdm(total=len(records), unit="item", desc="catalog", file=sys.stdout) as bar:
        result = await catalog.upsert(records, progress=on_bar(bar))
    stale = await catalog.stale_count()
    if stale:
        with tqdm(
            total=stale, unit="item", desc="re-encode (model changed)", file=sys.stdout
        ) as bar:
            await catalog.reencode(progress=on_bar(bar))
    return result
