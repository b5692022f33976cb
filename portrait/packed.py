"""Per-item strings packed into a few flat arrays, read as ordinary sequences.

Pure: numpy only, no I/O.

A catalog view holds each item's title and tags. As Python objects (a list of strings, a
tuple of tuples) a million items cost every shard process ~300 MB of small objects, rebuilt
from a pickle on each catalog version. Packed, they are two or three numpy arrays that Ray's
object store maps into every process on a node once, zero-copy, and an item's strings are
decoded only when read (a recommendation reads ten titles; the fold reads one item's tags).
:class:`Appended` puts a catalog delta's few entries after a packed base without copying it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar, overload

import numpy as np

T = TypeVar("T")


class PackedStrings(Sequence[str]):
    """Strings as one UTF-8 buffer and ``len + 1`` offsets into it."""

    __slots__ = ("_blob", "_offsets")

    def __init__(self, blob: np.ndarray, offsets: np.ndarray) -> None:
        self._blob, self._offsets = blob, offsets

    @classmethod
    def of(cls, strings: Sequence[str]) -> PackedStrings:
        encoded = [s.encode() for s in strings]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return int(self._offsets.size) - 1

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
        return self._blob[lo:hi].tobytes().decode()

    def parts(self) -> tuple[np.ndarray, np.ndarray]:
        return self._blob, self._offsets

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedStrings, (self._blob, self._offsets))


class PackedTags(Sequence[tuple[str, ...]]):
    """Each item's tags as codes into one name list (CSR: ``offsets`` per item)."""

    __slots__ = ("names", "offsets", "codes")

    def __init__(self, names: Sequence[str], offsets: np.ndarray, codes: np.ndarray) -> None:
        self.names = tuple(names)
        self.offsets, self.codes = offsets, codes

    @classmethod
    def of(cls, tags: Sequence[Sequence[str]]) -> PackedTags:
        names: dict[str, int] = {}
        codes = [names.setdefault(t, len(names)) for item_tags in tags for t in item_tags]
        offsets = np.zeros(len(tags) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in tags], out=offsets[1:])
        return cls(tuple(names), offsets, np.asarray(codes, dtype=np.int32))

    def __len__(self) -> int:
        return int(self.offsets.size) - 1

    @overload
    def __getitem__(self, i: int) -> tuple[str, ...]: ...
    @overload
    def __getitem__(self, i: slice) -> list[tuple[str, ...]]: ...
    def __getitem__(self, i: int | slice) -> tuple[str, ...] | list[tuple[str, ...]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        lo, hi = int(self.offsets[i]), int(self.offsets[i + 1])
        return tuple(self.names[c] for c in self.codes[lo:hi])

    def __reduce__(self) -> tuple[Any, ...]:
        return (PackedTags, (self.names, self.offsets, self.codes))


class Appended(Sequence[T], Generic[T]):
    """``base`` followed by ``tail`` (a delta's entries): the base is not copied."""

    __slots__ = ("base", "tail")

    def __init__(self, base: Sequence[T], tail: Sequence[T]) -> None:
        joined: tuple[T, ...] = tuple(tail)
        if isinstance(base, Appended):  # one level: the tails of successive deltas join
            inner: Appended[T] = base
            base, joined = inner.base, (*inner.tail, *joined)
        self.base: Sequence[T] = base
        self.tail: tuple[T, ...] = joined

    def __len__(self) -> int:
        return len(self.base) + len(self.tail)

    @overload
    def __getitem__(self, i: int) -> T: ...
    @overload
    def __getitem__(self, i: slice) -> list[T]: ...
    def __getitem__(self, i: int | slice) -> T | list[T]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        n = len(self.base)
        return self.base[i] if i < n else self.tail[i - n]

    def __iter__(self) -> Iterator[T]:
        yield from self.base
        yield from self.tail
