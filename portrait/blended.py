"""An item space blended from text and collaborative vectors, composed when read.

Pure: numpy only, no I/O.

A blended row is ``[sqrt(1 - alpha) * text, sqrt(alpha) * collab]`` for an item the
collaborative space covers and ``[text, 0]`` for one it does not (see
:func:`portrait.collaborative.combine`, whose vectors these equal up to float rounding). At a
million items a materialised blended matrix would be a second copy of the catalog per
collaborative share, while the collaborative part covers only the items with enough users
(often a few percent of a shop's catalog). So :class:`BlendedIndex` keeps the text index it
blends (shared with the view's text-only index) and the covered items' collaborative vectors,
and composes rows when they are read: a gather of the fold's or the candidates' rows costs a
few microseconds more, and nothing is copied per share. Only the whole matrix
(:attr:`BlendedIndex.matrix`, what exact full-catalog scoring reads on small catalogs) is
assembled, once, when asked for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from portrait.item_space import ItemSpace
from portrait.items import ItemIndex, l2_normalise


class BlendedIndex(ItemIndex):
    """``text`` blended at collaborative share ``alpha`` with the covered rows' vectors.

    Args:
        text: the text-only index (unit rows); ids, rows, tags and superseded rows are its.
        slots: per row of ``text``, the row of ``collab`` that covers it, -1 for none.
        collab: unit collaborative vectors, ``(covered, dim)`` float32.
        alpha: the collaborative share in [0, 1].
        space_version: the item space's version.
        covers: item id -> row of ``collab`` (to place rows a delta appends); built from
            the space's ids when not given.
    """

    __slots__ = ("_text", "_slots", "_collab", "_alpha", "_weights", "_covers")

    def __init__(  # noqa: PLR0913 - the parts of a blend, each needed
        self,
        text: ItemIndex,
        slots: np.ndarray,
        collab: np.ndarray,
        alpha: float,
        space_version: str | int,
        covers: Mapping[str, int],
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        slots = np.asarray(slots, dtype=np.int64)
        if slots.shape != (len(text),):
            raise ValueError("one slot per text row")
        self._text = text
        self._slots = slots
        self._collab = np.ascontiguousarray(collab, dtype=np.float32)
        self._alpha = float(alpha)
        self._weights = (np.float32(np.sqrt(1.0 - alpha)), np.float32(np.sqrt(alpha)))
        self._covers = covers
        # The ItemIndex side: ids, lookups and tags are the text index's own objects.
        self._ids, self._rows, self._tags = text._ids, text._rows, text._tags
        self._tail_rows, self._alive = text._tail_rows, text._alive
        self._matrix, self._tail = text._matrix, text._tail
        self.model_id, self.text_dim, self.space_version = text.model_id, text.dim, space_version
        self._column_major = self._joined = None

    @property
    def dim(self) -> int:
        return self.text_dim + int(self._collab.shape[1])

    @property
    def text(self) -> ItemIndex:
        return self._text

    @property
    def base_matrix(self) -> np.ndarray:
        return self.matrix

    @property
    def matrix(self) -> np.ndarray:
        """The whole blended matrix, assembled once (exact scoring of a small catalog)."""
        if self._joined is None:
            self._joined = self.vectors(np.arange(len(self), dtype=np.int64))
            self._joined.setflags(write=False)
        return self._joined

    def vectors(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        out = np.zeros((rows.size, self.dim), dtype=np.float32)
        slots = self._slots[rows]
        covered = slots >= 0
        text_w, collab_w = self._weights
        out[:, : self.text_dim] = self._text.vectors(rows)
        out[covered, : self.text_dim] *= text_w
        out[covered, self.text_dim :] = self._collab[slots[covered]] * collab_w
        return out

    def extended(
        self, ids: Sequence[str], matrix: np.ndarray, tags: Sequence[Sequence[str]]
    ) -> BlendedIndex:
        """Text rows appended (see :meth:`ItemIndex.extended`); a new version of a covered
        item keeps its collaborative vector."""
        return self.over(self._text.extended(ids, matrix, tags))

    def over(self, text: ItemIndex) -> BlendedIndex:
        """This blend over ``text``, which is this blend's text index grown by deltas: the
        rows it appended are placed by id (no copy of the collaborative vectors)."""
        start = len(self._slots)
        new = text.ids[start:]
        added = np.fromiter((self._covers.get(i, -1) for i in new), dtype=np.int64,
                            count=len(new))
        return BlendedIndex(text, np.concatenate([self._slots, added]), self._collab,
                            self._alpha, self.space_version, self._covers)

    def on(self, text: ItemIndex) -> BlendedIndex:
        """This blend over another text index of the same items (a compacted one): every
        row placed by id."""
        slots = np.fromiter((self._covers.get(i, -1) for i in text.ids), dtype=np.int64,
                            count=len(text))
        return BlendedIndex(text, slots, self._collab, self._alpha, self.space_version,
                            self._covers)

    def parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(slots, collab): what crosses processes besides the shared text index."""
        return self._slots, self._collab


def covers_of(space: ItemSpace) -> dict[str, int]:
    """Item id -> row of the space's vectors."""
    return {item_id: row for row, item_id in enumerate(space.item_ids)}


def blended_index(text: ItemIndex, space: ItemSpace, alpha: float,
                  covers: Mapping[str, int] | None = None) -> BlendedIndex:
    """``text`` (a text-only index) in ``space`` at collaborative share ``alpha``.

    Rows and ids stay those of ``text``; an item the space does not cover (new since the
    retrain) keeps its text vector, ``[text, 0]``; space items outside the catalog are ignored.
    """
    covers = covers_of(space) if covers is None else covers
    slots = np.fromiter((covers.get(i, -1) for i in text.ids), dtype=np.int64,
                        count=len(text))
    return BlendedIndex(text, slots, l2_normalise(space.vectors), alpha, space.version, covers)
