"""The in-memory item index: ids, one vector per item, and tags.

It is the shipped :class:`portrait.ports.ItemLookup` used by the fold and by ranking. The
matrix is a plain contiguous float32 array, so it can be placed in shared memory (Ray's object
store, a memory map) and read by many processes without copies.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from portrait.errors import InvalidField


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    return m / np.where(norms == 0.0, 1.0, norms)


class ItemIndex:
    """Item ids with their vectors (rows of ``matrix``) and tags."""

    __slots__ = ("_ids", "_rows", "_matrix", "_tags", "model_id", "_column_major")

    def __init__(
        self,
        ids: Sequence[str],
        matrix: np.ndarray,
        tags: Sequence[Sequence[str]] | None = None,
        model_id: str = "",
    ) -> None:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise InvalidField("matrix", f"shape {matrix.shape} does not match {len(ids)} ids")
        if tags is not None and len(tags) != len(ids):
            raise InvalidField("tags", "must have one entry per item")
        self._ids = tuple(ids)
        self._rows: Mapping[str, int] = {item_id: i for i, item_id in enumerate(self._ids)}
        if len(self._rows) != len(self._ids):
            raise InvalidField("ids", "item ids must be unique")
        self._matrix = matrix
        self._matrix.setflags(write=False)
        self._tags = tuple(tuple(t) for t in tags) if tags is not None else ((),) * len(ids)
        self.model_id = model_id
        self._column_major: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def matrix(self) -> np.ndarray:
        return self._matrix

    def column_major(self) -> np.ndarray:
        """The matrix in column-major order, for scoring the whole catalog.

        ``matrix @ v`` over the row-major copy ran about 3x slower on one thread (what a Ray
        actor gets) than over this layout, while gathering rows, which the fold does, is
        several times faster row-major; so a process that ranks keeps both, built on its
        first ranking (one more matrix of memory).
        """
        if self._column_major is None:
            self._column_major = np.asfortranarray(self._matrix)
            self._column_major.setflags(write=False)
        return self._column_major

    @property
    def ids(self) -> tuple[str, ...]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def row(self, item_id: str) -> int | None:
        return self._rows.get(item_id)

    def tags(self, row: int) -> Sequence[str]:
        return self._tags[row]

    def all_tags(self) -> Sequence[Sequence[str]]:
        return self._tags
