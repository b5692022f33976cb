"""The in-memory item index: ids, one vector per item, and tags.

It is the shipped :class:`portrait.ports.ItemLookup` used by the fold and by ranking. The
matrix is a plain contiguous float32 array, so it can be placed in shared memory (Ray's object
store, a memory map) and read by many processes without copies.

An index is one *item space*: its first ``text_dim`` columns are the text part (the text
encoder's vectors, scaled when blended) and any further columns a collaborative part that
retrains replace. Profiles keep per-item weights, not vectors (see :mod:`portrait.profile`),
so one profile is read in any space; ``space_version`` names the space for caches and logs.

An index grows by *deltas* (:meth:`ItemIndex.extended`): rows appended after a shared base,
which is never copied, so applying an item upsert costs what changed, not the catalog. A
changed item gets a new row and its old row is *superseded* (:attr:`ItemIndex.alive` is False
there): rankers drop it through their allowed-rows mask, and :meth:`ItemIndex.row` answers
the newest row. The full matrix of a grown index (:attr:`ItemIndex.matrix`) is assembled only
when something asks for it; row gathers (:meth:`ItemIndex.vectors`) never assemble it.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping, Sequence
from itertools import repeat

import numpy as np

from portrait.errors import InvalidField
from portrait.packed import Appended, PackedTags


def l2_normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    m = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(m, axis=-1, keepdims=True)
    result: np.ndarray = m / np.where(norms == 0.0, 1.0, norms)
    return result


# Rows written into each tail buffer, by the buffer's id (removed when it is freed). Rows are
# appended by deltas into a buffer with room to grow (doubling), so appending costs the new
# rows: an index's tail is a read-only view of the buffer's first rows, and rows written after
# them never change what an older index reads. Appending anywhere but at the buffer's end (two
# deltas applied to the same index) copies instead.
_FILLED: dict[int, int] = {}


def _append_rows(tail: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
    """``tail`` with ``matrix``'s rows after it, as a read-only view of a tail buffer."""
    n, m = (0 if tail is None else tail.shape[0]), matrix.shape[0]
    data = tail.base if tail is not None else None
    if (not isinstance(data, np.ndarray) or _FILLED.get(id(data)) != n
            or n + m > data.shape[0]):
        data = np.empty((max(1024, 2 * (n + m)), matrix.shape[1]), dtype=np.float32)
        if tail is not None:
            data[:n] = tail
        weakref.finalize(data, _FILLED.pop, id(data), None)
    data[n : n + m] = matrix
    _FILLED[id(data)] = n + m
    view: np.ndarray = data[: n + m]
    view.setflags(write=False)
    return view


class ItemIndex:
    """Item ids with their vectors (rows of ``matrix``) and tags: one item space.

    Attributes:
        model_id: the text encoder whose vectors fill the text part.
        text_dim: width of the text part, ``matrix[:, :text_dim]``; ``dim`` when the space
            has no collaborative part. A profile's text vectors are composed there.
        space_version: opaque name of this item space (a publisher of retrained spaces sets
            a distinct one per version); by default ``"text"`` for a text-only space and
            ``"text+collab"`` for a blended one.
    """

    __slots__ = (
        "_ids", "_rows", "_matrix", "_tags", "model_id", "_column_major", "text_dim",
        "space_version", "_tail", "_tail_rows", "_alive", "_joined",
        "__weakref__",  # profiles cache compositions under a weak reference
    )

    def __init__(
        self,
        ids: Sequence[str],
        matrix: np.ndarray,
        tags: Sequence[Sequence[str]] | None = None,
        model_id: str = "",
        *,
        text_dim: int | None = None,
        space_version: str | int | None = None,
        alive: np.ndarray | None = None,
    ) -> None:
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(ids):
            raise InvalidField("matrix", f"shape {matrix.shape} does not match {len(ids)} ids")
        dim = int(matrix.shape[1])
        if text_dim is None:
            text_dim = dim
        if not 0 < text_dim <= dim:
            raise InvalidField("text_dim", f"must be between 1 and the matrix width {dim}")
        self.text_dim = int(text_dim)
        if space_version is None:
            space_version = "text" if text_dim == dim else "text+collab"
        self.space_version: str | int = space_version
        if tags is not None and len(tags) != len(ids):
            raise InvalidField("tags", "must have one entry per item")
        self._ids: Sequence[str] = tuple(ids)
        if alive is not None:  # a flattened index keeps superseded rows where they were
            if alive.shape != (len(ids),):
                raise InvalidField("alive", "must have one entry per item")
            current = np.flatnonzero(alive).tolist()
            self._rows: Mapping[str, int] = {self._ids[i]: i for i in current}
            unique = len(self._rows) == len(current)
        else:
            self._rows = {item_id: i for i, item_id in enumerate(self._ids)}
            unique = len(self._rows) == len(self._ids)
        if not unique:
            raise InvalidField("ids", "item ids must be unique")
        self._matrix = matrix
        self._matrix.setflags(write=False)
        self._tags: Sequence[Sequence[str]] = (
            tags if isinstance(tags, PackedTags)  # shared arrays: read in place, not copied
            else tuple(tuple(t) for t in tags) if tags is not None else ((),) * len(ids))
        self.model_id = model_id
        self._column_major: np.ndarray | None = None
        # Rows appended by deltas after the base: their vectors, id -> newest row, which rows
        # are superseded, and the base and tail assembled (only if asked for).
        self._tail: np.ndarray | None = None
        self._tail_rows: dict[str, int] = {}
        self._alive: np.ndarray | None = None if alive is None or alive.all() else alive
        self._joined: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self._matrix.shape[1])

    @property
    def n_base(self) -> int:
        """Rows of the shared base; rows from here on came with deltas."""
        return int(self._matrix.shape[0])

    @property
    def tail_rows(self) -> int:
        """Rows appended by deltas after the base."""
        return 0 if self._tail is None else int(self._tail.shape[0])

    @property
    def base_matrix(self) -> np.ndarray:
        """The base's rows (what is shared between processes, never copied)."""
        return self._matrix

    @property
    def matrix(self) -> np.ndarray:
        """Every row's vector. For a grown index this assembles base and tail once (a copy of
        the catalog): row gathers should use :meth:`vectors`, which does not."""
        if self._tail is None:
            return self._matrix
        if self._joined is None:
            self._joined = np.concatenate([self._matrix, self._tail])
            self._joined.setflags(write=False)
        return self._joined

    def vectors(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The vectors of ``rows`` (a new float32 array), base or tail alike."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._tail is None:
            out: np.ndarray = self._matrix[rows]
            return out
        out = np.empty((rows.size, self.dim), dtype=np.float32)
        in_base = rows < self.n_base
        out[in_base] = self._matrix[rows[in_base]]
        out[~in_base] = self._tail[rows[~in_base] - self.n_base]
        return out

    @property
    def alive(self) -> np.ndarray | None:
        """Per row, False where a newer row of the same item superseded it; None when every
        row is current (an index that never grew by a changed item)."""
        return self._alive

    def extended(
        self, ids: Sequence[str], matrix: np.ndarray, tags: Sequence[Sequence[str]]
    ) -> ItemIndex:
        """This index with ``ids`` appended (new items, or new versions of items it holds:
        their old rows become superseded). The base is shared, not copied: the cost is the
        tail's. Raises InvalidField on a shape that does not match."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape != (len(ids), self.dim):
            raise InvalidField("matrix", f"shape {matrix.shape} does not match {len(ids)} ids "
                                         f"of width {self.dim}")
        if len(tags) != len(ids):
            raise InvalidField("tags", "must have one entry per item")
        if len(set(ids)) != len(ids):
            raise InvalidField("ids", "item ids must be unique")
        grown: ItemIndex = object.__new__(ItemIndex)
        start = len(self._ids)
        grown._ids = Appended(self._ids, ids)
        grown._rows = self._rows
        grown._matrix = self._matrix
        grown._tags = Appended(self._tags, [tuple(t) for t in tags])
        grown.model_id, grown.text_dim = self.model_id, self.text_dim
        grown.space_version = self.space_version
        grown._column_major = grown._joined = None
        grown._tail = _append_rows(self._tail, matrix)
        alive = np.ones(start, dtype=bool) if self._alive is None else self._alive.copy()
        superseded = self.rows_of(ids)
        alive[superseded[superseded >= 0]] = False
        grown._alive = np.concatenate([alive, np.ones(len(ids), dtype=bool)])
        grown._tail_rows = {**self._tail_rows,
                            **{item_id: start + i for i, item_id in enumerate(ids)}}
        return grown

    def column_major(self) -> np.ndarray:
        """The matrix in column-major order, for scoring the whole catalog.

        ``matrix @ v`` over the row-major copy ran about 3x slower on one thread (what a Ray
        actor gets) than over this layout, while gathering rows, which the fold does, is
        several times faster row-major; so a process that ranks keeps both, built on its
        first ranking (one more matrix of memory).
        """
        if self._column_major is None:
            self._column_major = np.asfortranarray(self.matrix)
            self._column_major.setflags(write=False)
        return self._column_major

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def row(self, item_id: str) -> int | None:
        if self._tail_rows:
            row = self._tail_rows.get(item_id)
            if row is not None:
                return row
        return self._rows.get(item_id)

    def rows_of(self, item_ids: Collection[str]) -> np.ndarray:
        """Rows of ``item_ids`` (int64, in their order), -1 for ids this index lacks.

        Composing a profile looks up every item it holds: ``map`` over the dict's own
        ``get`` runs several times faster than calling :meth:`row` per id.
        """
        rows = np.fromiter(
            map(self._rows.get, item_ids, repeat(-1)), dtype=np.int64, count=len(item_ids)
        )
        if self._tail_rows:
            newer = np.fromiter(map(self._tail_rows.get, item_ids, repeat(-1)),
                                dtype=np.int64, count=len(item_ids))
            rows = np.where(newer >= 0, newer, rows)
        return rows

    def tags(self, row: int) -> Sequence[str]:
        return self._tags[row]

    def all_tags(self) -> Sequence[Sequence[str]]:
        return self._tags
