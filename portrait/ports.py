"""Ports: the small Protocols the domain needs from the outside world.

Adapters live outside ``portrait/`` (``storage/`` for the logs, ``serve/`` for the vLLM
encoder); an in-memory adapter of each is shipped code, and one contract test suite runs
against every adapter of a port.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from portrait.access import TokenRecord
from portrait.catalog import ItemRecord
from portrait.erasure import ErasureRecord
from portrait.errors import PortraitError
from portrait.events import Event, RecordedEvent
from portrait.impression import Impression
from portrait.item_space import ItemSpace


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors in the item space.

    ``encode`` returns an L2-normalised float32 matrix of shape ``(len(texts), dim)`` in the
    order of ``texts``. Empty text is an error (:class:`portrait.errors.InvalidField`); text
    longer than the model's window is truncated, not rejected.

    ``encode`` embeds the texts as given. An encoder whose model wants role prefixes (e5's
    ``query: `` / ``passage: ``) also has a ``prompts`` attribute
    (:class:`portrait.prompts.TextPrompts`); callers apply it with
    :func:`portrait.prompts.prompts_of`, which reads no prompts from an encoder without one.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class AsyncEncoder(Protocol):
    """The :class:`Encoder` contract for async callers (the batched Serve deployment)."""

    @property
    def model_id(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def encode(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class ItemLookup(Protocol):
    """Read-only view of the item catalog the fold needs: a vector and tags per item."""

    @property
    def dim(self) -> int: ...

    @property
    def matrix(self) -> np.ndarray:
        """``(n_items, dim)`` float32, L2-normalised rows."""
        ...

    def row(self, item_id: str) -> int | None:
        """Row of ``item_id`` in ``matrix``, or None for an item the catalog lacks."""
        ...

    def tags(self, row: int) -> Sequence[str]:
        """Tags (genres, categories) of the item at ``row``."""
        ...


@dataclass(frozen=True, slots=True)
class TextFeatures:
    """What the encoder made of one text event: its vector and weighted keywords, and which
    encoder (``model_id``) made them: vectors of two encoders live in different spaces, and
    the fold refuses to add them up (:class:`portrait.errors.MixedTextSpaces`)."""

    vector: np.ndarray
    keywords: tuple[tuple[str, float], ...] = ()
    model_id: str = field(kw_only=True)


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of appending one event.

    ``duplicate`` is True when the event_id was already recorded; ``seq`` and ``position`` are
    then the original ones and nothing new was written.
    """

    event_id: str
    seq: int
    position: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One user's batch inside :meth:`EventLog.append_many`."""

    user_id: str
    events: Sequence[Event]
    expected_version: int | None = None
    # The events' codec bytes, when the caller already encoded them (the ingress does, to
    # ship them to a shard): stored as given, so an event is encoded once on its way in.
    payloads: Sequence[bytes] | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A serialised profile state as of ``seq``, built under config ``config_hash``."""

    user_id: str
    seq: int
    state: bytes
    config_hash: str


class EventLog(Protocol):
    """The append-only per-user event log.

    Semantics every adapter honours (the contract suite checks them):

    * ``append`` is all-or-nothing for a batch. New events get contiguous seqs after the
      stream's current version and increasing global positions.
    * ``expected_version`` (when not None) must equal the stream's current version, else
      :class:`VersionConflict` and nothing is written. It is checked only when the batch holds
      new events, so a retried batch whose events are all recorded returns their results.
    * A recorded event_id is a duplicate: its original seq/position are returned with
      ``duplicate=True``. Reusing an event_id for another user or for different content is an
      :class:`EventIdConflict`.
    """

    async def append(
        self, user_id: str, events: Sequence[Event], expected_version: int | None = None
    ) -> list[AppendResult]: ...

    async def append_many(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[AppendResult] | PortraitError]:
        """Several users' batches in ONE transaction (group commit).

        Each request is all-or-nothing on its own: a request that fails validation or its
        version check gets its error in its slot and writes nothing, while the others commit.
        A storage failure raises for the whole call (nothing was committed).
        """
        ...

    async def version(self, user_id: str) -> int:
        """The stream's last seq; 0 for a user with no events."""
        ...

    async def read(
        self,
        user_id: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        until_time: float | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """Events with ``after_seq < seq <= until_seq`` and ``occurred_at <= until_time``,
        in seq order, at most ``limit``."""
        ...

    async def read_tails(self, after: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """For each user of ``after``, the events with ``seq > after[user]`` in seq order
        (an empty list for none): many users' activations in one read."""
        ...

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Every user's events with ``position > after_position`` in position order.

        Positions are committed in order, so a reader that resumes from the last position it
        saw misses nothing."""
        ...


class TextKey(NamedTuple):
    """Where one text event's features are cached: its user, its id and a digest of its text.

    The text's digest is part of the key because features are encoded before the append: those
    of an event the log then refused stay cached, and a later, different event reusing the id
    must not inherit them. The user is part of it because event ids are unique per user only,
    and because an erasure deletes the user's features with everything else of theirs.
    """

    user_id: str
    event_id: str
    text_digest: str


class TextFeatureStore(Protocol):
    """Cache of encoded text events (vector + keywords) per model; derived, safe to lose.

    Replaying a user's reviews and searches would otherwise re-run the encoder on every
    activation and every time-travel query.
    """

    async def get_many(
        self, keys: Sequence[TextKey], model_id: str
    ) -> dict[TextKey, TextFeatures]: ...

    async def put_many(self, features: Mapping[TextKey, TextFeatures], model_id: str) -> None: ...

    async def forget_user(self, user_id: str) -> int:
        """Drop everything cached for the user (erasure); returns how many entries."""
        ...


# Snapshots kept per user and config hash: the newest few. Activation reads only the newest;
# older ones only shorten time-travel replays, which the log serves on its own.
KEEP_SNAPSHOTS = 3


class SnapshotStore(Protocol):
    """Latest-state snapshots that shorten replay. Always safe to lose."""

    async def save_many(self, snapshots: Sequence[Snapshot]) -> None:
        """Keep every snapshot (all or none); one already saved for the same key wins. Of
        each (user, config hash) saved to, only the newest :data:`KEEP_SNAPSHOTS` remain."""
        ...

    async def latest(
        self, user_id: str, config_hash: str, max_seq: int | None = None
    ) -> Snapshot | None:
        """The newest snapshot built under ``config_hash`` with ``seq <= max_seq``."""
        ...

    async def latest_many(self, config_hashes: Mapping[str, str]) -> dict[str, Snapshot]:
        """For each user of ``config_hashes`` that has one, the newest snapshot built under
        that user's config hash."""
        ...


@dataclass(frozen=True, slots=True)
class StoredItem:
    """A catalog item with the vector a model made of its text."""

    record: ItemRecord
    vector: np.ndarray
    model_id: str


@dataclass(frozen=True, slots=True)
class ItemVectors:
    """Every item one model embedded, ordered by id: what an item index is built from."""

    ids: list[str]
    matrix: np.ndarray  # (len(ids), dim) float32, as stored (not normalised)
    tags: list[tuple[str, ...]]


# How far back (in catalog-version units, microseconds for Postgres) a change read looks past
# the version asked for: a write's version is its transaction's start, so one that began
# before a reader saw version V can commit after it with a stamp below V.
CHANGE_SKEW = 30_000_000


@dataclass(frozen=True, slots=True)
class ItemChanges:
    """Items one model embedded that were written after a catalog version: what a catalog
    delta is built from. ``stamps`` are their versions (the store's :meth:`CatalogStore.version`
    scale), so a reader can tell an item it already applied from a newer write of it."""

    ids: list[str]
    matrix: np.ndarray  # (len(ids), dim) float32, as stored (not normalised)
    tags: list[tuple[str, ...]]
    titles: list[str]
    stamps: np.ndarray  # (len(ids),) int64


class CatalogStore(Protocol):
    """Where catalog items and their embeddings live. Encoding is the caller's job
    (:class:`storage.catalog.ItemCatalog`); a store only keeps what it is given."""

    async def existing(self, ids: Sequence[str]) -> dict[str, tuple[str, str | None]]:
        """item_id -> (its encoder text as stored, the model that embedded it)."""
        ...

    async def write(self, items: Sequence[StoredItem]) -> None:
        """Insert or replace ``items`` in one transaction; bumps :meth:`version`."""
        ...

    async def get(self, item_id: str) -> ItemRecord | None: ...

    async def not_embedded_by(self, model_id: str) -> list[ItemRecord]:
        """Items whose stored vector another model (or none) made."""
        ...

    async def vectors(self, model_id: str, dim: int) -> ItemVectors: ...

    async def version(self) -> int:
        """Grows whenever an item is inserted or changed; 0 for an empty catalog. Equal
        across processes reading the same store."""
        ...

    async def titles(self) -> dict[str, str]: ...

    async def changed_since(self, version: int, model_id: str, dim: int) -> ItemChanges:
        """Items ``model_id`` embedded whose version is above ``version`` minus the store's
        commit skew (:data:`CHANGE_SKEW`): writes that began before a version was read
        but committed after it are included, so a reader that skips the (id, stamp) pairs it
        has applied misses nothing and repeats nothing."""
        ...

    async def interaction_counts(self, after_position: int = 0) -> tuple[dict[str, int], int]:
        """Popularity's input: item_id -> positive interaction events in the event log at
        global positions above ``after_position``, and the highest position they cover
        (``after_position`` when there are none). Positions are assigned in commit order, so
        adding the counts after the returned position later misses and repeats nothing."""
        ...

    async def erasure_count(self) -> int:
        """How many users have been erased: counts made before the last erasure include
        events that no longer count, and must be made again."""
        ...


class ItemSpaceStore(Protocol):
    """Trained collaborative item spaces (:class:`portrait.item_space.ItemSpace`)."""

    async def save(self, space: ItemSpace) -> ItemSpace:
        """Store ``space`` whole, in one transaction, under the next version; returns it
        with that version. Only the newest few versions are kept."""
        ...

    async def latest(self) -> ItemSpace | None: ...

    async def latest_version(self) -> int:
        """The newest space's version without its vectors; 0 when there is none."""
        ...


class Eraser(Protocol):
    """Erases users at rest (crypto-shredding; see :mod:`storage.erasure`)."""

    async def erase(
        self, user_id: str, requested_by: str, now: float
    ) -> ErasureRecord | None:
        """Destroy the user's data key, detach their log rows from the id, delete their
        snapshots and cached features, and record the erasure; all at once. None (and
        nothing changed) when nothing is stored for the user."""
        ...

    async def last_erasure(self, user_id: str) -> ErasureRecord | None:
        """The newest erasure of this id, if any."""
        ...

    async def erasure_count(self) -> int:
        """How many erasures there have been (derived counts compare it to know they are
        stale)."""
        ...


class ImpressionStore(Protocol):
    """What recommendation responses served (:mod:`portrait.impression`): written in
    batches by the ingress, read by experiment reports. Never part of a profile."""

    async def record_many(self, impressions: Sequence[Impression]) -> None:
        """Store a batch in one statement; an id already stored is left as it is."""
        ...

    async def get(self, request_id: str) -> Impression | None: ...

    async def set_shown(self, request_id: str, shown: Sequence[str]) -> bool:
        """Record which served items the client displayed; False for an unknown id."""
        ...

    async def for_experiment(self, experiment: str) -> list[Impression]:
        """Every impression of the experiment, oldest first."""
        ...

    async def forget_user(self, user_id: str) -> int:
        """Delete the user's impressions (erasure); returns how many."""
        ...


class TokenStore(Protocol):
    """API token records (:mod:`portrait.access`): each with the digest of its secret."""

    async def create(self, record: TokenRecord, digest: bytes) -> None:
        """Store a new token. Raises InvalidField("name") if the name is taken."""
        ...

    async def find(self, token_id: str) -> tuple[TokenRecord, bytes] | None: ...

    async def list(self) -> list[TokenRecord]:
        """Every token, revoked ones included, oldest first."""
        ...

    async def revoke(self, name: str, now: float) -> TokenRecord | None:
        """Revoke the token called ``name`` (by name or id); the record, or None if none."""
        ...
