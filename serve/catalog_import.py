"""Importing a data set's items into the catalog, with progress bars (CLI and first run).

An import resumes: :meth:`storage.catalog.ItemCatalog.upsert` writes each chunk in its own
transaction, so what an interrupted run finished is stored, and a re-run skips it (counted as
unchanged) and encodes only the rest. The bar shows those counts as it goes.

Items may come with their own vectors (bring your own vectors): a ``.npz`` side file holding
``ids`` (the items' ids) and ``vectors`` (one row each), and optionally ``model`` (the model
that made them; else ``--vector-model``). Those items are stored with their vector and not
encoded; the others are encoded as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import numpy as np

from portrait.catalog import ItemRecord, ItemVector
from portrait.errors import InvalidField
from portrait.progress import on_bar
from storage.catalog import ItemCatalog, UpsertResult


async def import_items(
    catalog: ItemCatalog, records: Sequence[ItemRecord],
    vectors: Sequence[ItemVector | None] | None = None, *, out: TextIO | None = None,
) -> UpsertResult:
    """Upsert ``records`` (encoding what changed, storing the ``vectors`` given), then
    re-encode items a previous model embedded; both with a progress bar on ``out``
    (stdout by default) that counts what was skipped, encoded and given."""
    from tqdm import tqdm

    out = out or sys.stdout
    with tqdm(total=len(records), unit="item", desc="catalog", file=out) as bar:
        def tally(so_far: UpsertResult) -> None:
            bar.set_postfix({"skipped": str(so_far.unchanged), "encoded": str(so_far.encoded),
                             "given": str(so_far.given)}, refresh=False)

        result = await catalog.upsert(records, progress=on_bar(bar), vectors=vectors,
                                      tally=tally)
    stale = await catalog.stale_count()
    if stale:
        with tqdm(total=stale, unit="item", desc="re-encode (model changed)", file=out) as bar:
            await catalog.reencode(progress=on_bar(bar))
    return result


def summary(result: UpsertResult, total: int, seconds: float) -> str:
    """The line an import ends with: what was new, changed, skipped (already stored: a
    resumed or repeated import), encoded and given."""
    return (f"{total} items in {seconds:.1f}s: {result.inserted} new, {result.updated} "
            f"changed, {result.unchanged} skipped (already stored), {result.encoded} encoded, "
            f"{result.given} with their own vectors")


def load_vectors(
    path: Path, records: Sequence[ItemRecord], model: str | None = None
) -> list[ItemVector | None]:
    """The vectors of ``path`` (``.npz``: ``ids``, ``vectors``, optional ``model``) aligned
    with ``records`` (None for an item without one). Every row is checked before anything is
    imported: an id the catalog lacks, a repeated id, a bad row or no model is refused,
    naming it.

    Raises:
        InvalidField: ``vectors`` (the file) or ``vectors[row]``, or ``vector_model``.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            matrix = np.asarray(data["vectors"])
            stored_model = str(data["model"]) if "model" in data.files else None
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidField("vectors", f"{path}: an .npz with 'ids' and 'vectors' is needed "
                                      f"({exc})") from None
    if model is not None and stored_model is not None and model != stored_model:
        raise InvalidField("vector_model", f"{model!r} given, but {path} says {stored_model!r}")
    model = model or stored_model
    if not model:
        raise InvalidField("vector_model", f"name the model that made {path}'s vectors "
                                           "(--vector-model, or 'model' in the file)")
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise InvalidField("vectors", f"{path}: 'vectors' must have one row per id "
                                      f"({len(ids)} ids, shape {matrix.shape})")
    rows: dict[str, int] = {}
    for row, item_id in enumerate(ids):
        if item_id in rows:
            raise InvalidField(f"vectors[{row}]", f"id {item_id!r} repeats row {rows[item_id]}")
        rows[item_id] = row
    known = {r.item_id for r in records}
    for item_id, row in rows.items():
        if item_id not in known:
            raise InvalidField(f"vectors[{row}]", f"id {item_id!r} is not in the catalog")
    out: list[ItemVector | None] = []
    for rec in records:
        row = rows.get(rec.item_id, -1)
        if row < 0:
            out.append(None)
            continue
        try:
            out.append(ItemVector(matrix[row], model))
        except InvalidField as exc:
            raise InvalidField(f"vectors[{row}]", f"id {rec.item_id!r}: {exc.reason}") from None
    return out
