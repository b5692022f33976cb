"""The item index on disk: a directory that many processes map read-only.

Layout: ``matrix.npy`` (float32, rows L2-normalised) and ``meta.json`` (ids, tags, model id).
:func:`load_index` memory-maps the matrix, so N processes on a machine share one copy in the
page cache and loading costs milliseconds whatever the catalog size. Files are written to a
temporary name and renamed, so a reader never sees a half-written index.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from portrait.items import ItemIndex


def save_index(index: ItemIndex, directory: Path) -> None:
    """Write ``index`` under ``directory`` atomically (file by file, meta last)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp_matrix = directory / "matrix.npy.tmp"
    with open(tmp_matrix, "wb") as fh:
        np.save(fh, np.ascontiguousarray(index.matrix, dtype=np.float32))
    os.replace(tmp_matrix, directory / "matrix.npy")
    meta = {
        "model_id": index.model_id,
        "dim": index.dim,
        "ids": list(index.ids),
        "tags": [list(t) for t in index.all_tags()],
    }
    tmp_meta = directory / "meta.json.tmp"
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_meta, directory / "meta.json")


def load_index(directory: Path) -> ItemIndex:
    """The index saved under ``directory``, its matrix memory-mapped read-only."""
    meta = json.loads((directory / "meta.json").read_text())
    matrix = np.load(directory / "matrix.npy", mmap_mode="r")
    if matrix.shape != (len(meta["ids"]), meta["dim"]):
        raise ValueError(f"{directory}: matrix shape {matrix.shape} does not match meta.json")
    return ItemIndex(meta["ids"], matrix, meta["tags"], model_id=meta["model_id"])
