"""Postgres adapters of the event log and snapshot store (SQLAlchemy Core on asyncpg).

Every public method is one transaction run through :class:`storage.retry.RetryPolicy`, which
retries transient failures and translates driver errors into :mod:`portrait.errors`.
:class:`PostgresSnapshotStore` lives in :mod:`storage.postgres_snapshots` and is re-exported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, overload

from cryptography.exceptions import InvalidTag
from sqlalchemy import (
    BigInteger,
    Double,
    Select,
    Text,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from portrait.codec import MAX_PAYLOAD_BYTES, decode_stored
from portrait.errors import InvalidInput, PortraitError, StorageIntegrityError
from portrait.events import Event, RecordedEvent
from portrait.ports import AppendRequest, AppendResult
from storage.encryption import (
    EVENT,
    HEADER_BYTES,
    MARK,
    OVERHEAD,
    DataKey,
    SealedDataError,
    is_sealed,
    key_id_of,
)
from storage.planning import Recorded, event_keys, plan_appends, users_with_new_events
from storage.postgres_snapshots import PostgresSnapshotStore
from storage.retry import DEFAULT_RETRY, RetryPolicy, is_disconnect
from storage.schema import events as events_table
from storage.user_keys import UserKeys
from storage.validation import (
    PreparedBatch,
    check_count,
    check_read,
    prepare_batch,
    prepare_request,
)

# Key of the transaction-scoped advisory lock every appender takes ("port" in ASCII).
#
# Why a global lock: positions come from an identity sequence, and sequence values are handed
# out when a row is inserted, not when its transaction commits. Two concurrent appenders can
# take positions 11 and 12, and the one holding 12 can commit first. A ``read_all`` reader
# that runs between the two commits sees 12, remembers it as its checkpoint, and asks for
# ``position > 12`` from then on: position 11 commits a moment later and is skipped forever.
# Serialising appenders on this lock from before they draw a position until they commit makes
# commit order equal position order, which is the promise ``read_all`` makes (pyeventsourcing
# takes an exclusive table lock for the same reason). The same lock makes the rest of append
# race-free without relying on unique-violation retries: the event_id lookup and the
# ``max(seq)`` version check cannot be invalidated by another writer before we commit.
# The cost is one writer at a time for the whole store; a batch append holds it for a few
# milliseconds, and readers never take it.
WRITE_LOCK_KEY = 0x706F7274

_LOCK = select(func.pg_advisory_xact_lock(literal(WRITE_LOCK_KEY, BigInteger)))
# The requests' (user_id, event_id) keys as two parallel arrays, joined on the unique index.
_KEYS = (
    func.unnest(bindparam("users", type_=ARRAY(Text)), bindparam("ids", type_=ARRAY(Text)))
    .table_valued("user_id", "event_id")
    .render_derived(name="k")
)
_EXISTING = select(
    events_table.c.user_id, events_table.c.event_id, events_table.c.seq,
    events_table.c.position, events_table.c.payload,
).join(_KEYS, and_(events_table.c.user_id == _KEYS.c.user_id,
                   events_table.c.event_id == _KEYS.c.event_id))
_VERSION = select(func.coalesce(func.max(events_table.c.seq), 0)).where(
    events_table.c.user_id == bindparam("user_id", type_=Text)
)
# One max(seq) subquery per user, so each is a single backward step on the primary key
# (a GROUP BY over ANY(:users) would scan every event of every user).
_USERS = (
    func.unnest(bindparam("users", type_=ARRAY(Text)))
    .table_valued("user_id")
    .render_derived(name="u")
)
_VERSIONS = select(
    _USERS.c.user_id,
    func.coalesce(
        select(func.max(events_table.c.seq))
        .where(events_table.c.user_id == _USERS.c.user_id)
        .scalar_subquery(),
        0,
    ),
)
# All new rows in one statement of column arrays. Its text does not depend on the row count
# (a multi-row VALUES list would be a new statement, parsed and prepared again, for every
# batch size), and binding eight arrays is far cheaper than binding eight values per row.
# Rows are inserted in array order, so positions follow the plan's write order; RETURNING
# (user_id, seq) maps each position back to its row.
_INSERT_COLUMNS = (
    ("user_id", "text"), ("seq", "bigint"), ("event_id", "text"), ("event_type", "text"),
    ("schema_version", "smallint"), ("occurred_at", "double precision"),
    ("item_id", "text"), ("payload", "bytea"),
)
_NAMES = ", ".join(c for c, _ in _INSERT_COLUMNS)
_ARRAYS = ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _INSERT_COLUMNS)
_INSERT = text(
    f"INSERT INTO {events_table.name} ({_NAMES}) SELECT {_NAMES} "
    f"FROM unnest({_ARRAYS}) WITH ORDINALITY AS r({_NAMES}, ord) ORDER BY ord "
    "RETURNING user_id, seq, position"
)
# Where each user's tail starts, for read_tails: unnest of two parallel arrays.
_TAIL_STARTS = (
    func.unnest(bindparam("users", type_=ARRAY(Text)), bindparam("afters", type_=ARRAY(BigInteger)))
    .table_valued("user_id", "after_seq")
    .render_derived(name="t")
)
# date_part returns double precision; extract() returns numeric, which decodes to Decimal.
_RECORDED_AT = func.date_part(literal_column("'epoch'"), events_table.c.recorded_at, type_=Double)
_RECORD_COLUMNS = (
    events_table.c.seq, events_table.c.position, _RECORDED_AT, events_table.c.payload
)

# An erased user's remaining rows move to a user id no real one can have (ids are printable,
# see portrait.validation; this starts with a control character), so readers of the whole log
# leave them out without a join, and the erased id itself is gone from the log.
ERASED_PREFIX = "\x1ferased:"


def not_erased(user_id: Any) -> Any:
    """A SQL condition: ``user_id`` is not an erased user's tombstone."""
    return ~user_id.startswith(ERASED_PREFIX, autoescape=True)


@contextmanager
def _stored_payloads() -> Iterator[None]:
    """Blame the store, not the caller, for a stored payload that does not decode."""
    try:
        yield
    except InvalidInput as exc:
        raise StorageIntegrityError(f"a stored event does not decode: {exc}") from exc


Opener = Callable[[bytes], bytes]
SEALED = bytes([MARK])


@overload
def _opened(rows: Sequence[Sequence[Any]], openers: Mapping[bytes, Opener | None]
            ) -> list[RecordedEvent]: ...
@overload
def _opened(rows: Sequence[Sequence[Any]], openers: Mapping[bytes, Opener | None], *,
            keep_gaps: bool) -> list[RecordedEvent | None]: ...
def _opened(rows: Sequence[Sequence[Any]], openers: Mapping[bytes, Opener | None], *,
            keep_gaps: bool = False) -> list[Any]:
    """``(seq, position, recorded_at, payload)`` rows as events: plaintext payloads decoded,
    sealed ones opened first. A row whose key is gone is left out (None with ``keep_gaps``).
    The loop is written for replays of thousands of rows: one opener per key, no per-row
    function layers."""
    out: list[Any] = []
    try:
        with _stored_payloads():
            for seq, position, recorded_at, payload in rows:
                if payload[:1] == SEALED and len(payload) > OVERHEAD:
                    open_one = openers.get(payload[:HEADER_BYTES])
                    if open_one is None:
                        if keep_gaps:
                            out.append(None)
                        continue
                    payload = open_one(payload)
                out.append(RecordedEvent(seq, position, recorded_at, decode_stored(payload)))
    except InvalidTag:
        raise SealedDataError("a sealed event does not open with its user's key: altered, "
                              "or moved from another user's rows") from None
    return out


def _event(payload: bytes, keys: Mapping[int, DataKey]) -> Event | None:
    """The event a stored payload holds (call inside :func:`_stored_payloads`); None when it
    is sealed with a key that no longer exists (its user was erased)."""
    if not is_sealed(payload):
        return decode_stored(payload)  # written before encryption was on, or with it off
    key = keys.get(key_id_of(payload))
    if key is None:
        return None
    return decode_stored(key.open(EVENT, payload))


class PostgresEventLog:
    """An :class:`~portrait.ports.EventLog` in the ``events`` table.

    Args:
        engine: an asyncpg engine (see :func:`storage.database.create_engine`).
        retry: how transient failures are retried.
        payload_limit: largest encoded event accepted, in bytes.
        keys: seal each payload with its user's data key (:mod:`storage.encryption`); None
            writes plaintext. Sealed payloads are read either way when the key is at hand.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        payload_limit: int = MAX_PAYLOAD_BYTES,
        keys: UserKeys | None = None,
    ) -> None:
        self._engine = engine
        self._retry = retry
        self._payload_limit = payload_limit
        self._keys = keys

    async def append(
        self, user_id: str, events: Sequence[Event], expected_version: int | None = None
    ) -> list[AppendResult]:
        """Append a batch in one transaction. See :class:`~portrait.ports.EventLog`.

        Raises:
            InvalidField, PayloadTooLarge: before any I/O.
            VersionConflict, EventIdConflict: nothing was written.
            StorageUnavailable, StorageIntegrityError: see :mod:`storage.retry`.
        """
        batch = prepare_batch(
            user_id, events, expected_version, payload_limit=self._payload_limit
        )
        if not batch.unique:
            return []
        [outcome] = await self._retry.run(lambda: self._apply([batch]))
        if isinstance(outcome, PortraitError):
            raise outcome
        return outcome

    async def append_many(
        self, requests: Sequence[AppendRequest]
    ) -> list[list[AppendResult] | PortraitError]:
        """Several users' batches in one transaction (group commit).

        Each request is all or nothing and gets its results or its error; a storage failure
        raises for the whole call, and then nothing was committed.
        """
        batches = [prepare_request(r, payload_limit=self._payload_limit) for r in requests]
        if not event_keys(batches):  # nothing to look up or write
            return plan_appends(batches, {}, {}).results()
        return await self._retry.run(lambda: self._apply(batches))

    async def _apply(
        self, batches: Sequence[PreparedBatch | PortraitError]
    ) -> list[list[AppendResult] | PortraitError]:
        """Plan and write ``batches`` in one transaction under the write lock."""
        async with self._engine.begin() as conn:
            await conn.execute(_LOCK)
            keys = event_keys(batches)
            # Read in this transaction, under the write lock that erasure takes too: a key
            # destroyed a moment ago is never used to seal.
            data_keys = ({} if self._keys is None else
                         await self._keys.current(conn, [u for u, _ in keys], create=True))
            by_id = {k.key_id: k for k in data_keys.values()}
            found = await conn.execute(
                _EXISTING, {"users": [u for u, _ in keys], "ids": [i for _, i in keys]}
            )
            recorded = {}
            with _stored_payloads():
                for old in found:
                    event = _event(old.payload, by_id)
                    if event is None:
                        raise StorageIntegrityError(
                            f"a stored event of {old.user_id!r} is sealed with a key that is "
                            "not the user's")
                    recorded[(old.user_id, old.event_id)] = Recorded(event, old.seq,
                                                                     old.position)
            users = users_with_new_events(batches, recorded)
            versions: dict[str, int] = {}
            if users:
                result = await conn.execute(_VERSIONS, {"users": users})
                versions = {user_id: version for user_id, version in result}
            plan = plan_appends(batches, recorded, versions)
            if plan.rows:
                events = [row.prepared.event for row in plan.rows]
                params = {
                    "user_id": [row.user_id for row in plan.rows],
                    "seq": [row.seq for row in plan.rows],
                    "event_id": [e.event_id for e in events],
                    "event_type": [e.TYPE for e in events],
                    "schema_version": [e.SCHEMA_VERSION for e in events],
                    "occurred_at": [float(e.occurred_at) for e in events],
                    "item_id": [getattr(e, "item_id", None) for e in events],
                    "payload": self._sealed(plan.rows, data_keys),
                }
                inserted = await conn.execute(_INSERT, params)
                positions = {(u, seq): position for u, seq, position in inserted}
                if len(positions) != len(plan.rows):
                    raise StorageIntegrityError(
                        f"inserted {len(positions)} of {len(plan.rows)} events"
                    )
                for row in plan.rows:
                    row.position = positions[(row.user_id, row.seq)]
            return plan.results()

    def _sealed(self, rows: Sequence[Any], data_keys: Mapping[str, DataKey]) -> list[bytes]:
        """The rows' payloads as stored: sealed with their users' keys when encrypting."""
        if self._keys is None:
            return [row.prepared.payload for row in rows]
        by_user: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_user.setdefault(row.user_id, []).append(i)
        out: list[bytes] = [b""] * len(rows)
        for user_id, indexes in by_user.items():
            sealed = data_keys[user_id].seal_many(
                EVENT, [rows[i].prepared.payload for i in indexes])
            for i, blob in zip(indexes, sealed, strict=True):
                out[i] = blob
        return out

    async def version(self, user_id: str) -> int:
        """See :meth:`portrait.ports.EventLog.version`."""

        async def attempt() -> int:
            async with self._engine.connect() as conn:
                return int((await conn.execute(_VERSION, {"user_id": user_id})).scalar_one())

        return await self._retry.run(attempt)

    async def read(
        self,
        user_id: str,
        *,
        after_seq: int = 0,
        until_seq: int | None = None,
        until_time: float | None = None,
        limit: int | None = None,
    ) -> list[RecordedEvent]:
        """See :meth:`portrait.ports.EventLog.read`."""
        check_read(after_seq, until_seq, until_time, limit)
        query = select(*_RECORD_COLUMNS).where(
            events_table.c.user_id == user_id, events_table.c.seq > after_seq
        )
        if until_seq is not None:
            query = query.where(events_table.c.seq <= until_seq)
        if until_time is not None:
            query = query.where(events_table.c.occurred_at <= float(until_time))
        query = query.order_by(events_table.c.seq)
        if limit is not None:
            query = query.limit(limit)
        return await self._fetch(query)

    async def read_tails(self, after: Mapping[str, int]) -> dict[str, list[RecordedEvent]]:
        """See :meth:`portrait.ports.EventLog.read_tails`: one query for every user."""
        for seq in after.values():
            check_count("after", seq)
        out: dict[str, list[RecordedEvent]] = {user_id: [] for user_id in after}
        if not after:
            return out
        query = (
            select(events_table.c.user_id, *_RECORD_COLUMNS)
            .join(_TAIL_STARTS, events_table.c.user_id == _TAIL_STARTS.c.user_id)
            .where(events_table.c.seq > _TAIL_STARTS.c.after_seq)
            .order_by(events_table.c.user_id, events_table.c.seq)
        )
        rows = await self._fetch_rows(query, {"users": list(after), "afters": list(after.values())})
        openers = await self._openers(row[4] for row in rows)
        for user_id, recorded in zip(
                (row[0] for row in rows), _opened([row[1:] for row in rows], openers,
                                                  keep_gaps=True), strict=True):
            if recorded is not None:
                out[user_id].append(recorded)
        return out

    async def read_all(self, after_position: int = 0, limit: int = 1000) -> list[RecordedEvent]:
        """Every user's events with ``position > after_position``, in position order."""
        check_count("after_position", after_position)
        check_count("limit", limit)
        query = (
            select(*_RECORD_COLUMNS)
            .where(events_table.c.position > after_position, not_erased(events_table.c.user_id))
            .order_by(events_table.c.position)
            .limit(limit)
        )
        return await self._fetch(query)

    async def _fetch(self, query: Select[Any]) -> list[RecordedEvent]:
        """The rows' events; rows sealed with a destroyed key (an erasure that committed after
        this read's snapshot) are left out."""
        rows = await self._fetch_rows(query)
        return _opened(rows, await self._openers(row[3] for row in rows))

    async def _openers(self, payloads: Iterable[bytes]) -> dict[bytes, Opener | None]:
        """Per sealed header seen in ``payloads`` (it names the key), the function that opens
        its blobs, or None when that key is gone (the user was erased)."""
        heads = {p[:HEADER_BYTES] for p in payloads if p[:1] == SEALED and len(p) > OVERHEAD}
        if not heads:
            return {}
        if self._keys is None:
            raise StorageIntegrityError(
                "the event log is encrypted but this process has no master key: set "
                "PORTRAIT_MASTER_KEY (or PORTRAIT_MASTER_KEY_FILE)")
        user_keys = self._keys
        ids = {head: key_id_of(head) for head in heads}
        keys = await self._retry.run(lambda: user_keys.by_id(self._engine, set(ids.values())))
        return {head: keys[i].opener(EVENT) if i in keys else None for head, i in ids.items()}

    async def _fetch_rows(
        self, query: Select[Any], values: Mapping[str, Any] | None = None
    ) -> list[Any]:
        # Replay reads thousands of rows, so the statement SQLAlchemy compiles runs on the
        # asyncpg connection underneath: its records skip Core's per-row result processing
        # (about 40% of a 10,000-event read here). Only plain columns are read this way.
        compiled = query.compile(dialect=self._engine.dialect)
        bound = {**compiled.params, **(values or {})}
        params = [bound[name] for name in compiled.positiontup or ()]

        async def attempt() -> list[Any]:
            async with self._engine.connect() as conn:
                raw: Any = (await conn.get_raw_connection()).driver_connection
                try:
                    rows: list[Any] = await raw.fetch(compiled.string, *params)
                except Exception as exc:
                    # SQLAlchemy did not run this statement, so it cannot see the connection
                    # die: without this, a dead connection (a Postgres restart kills them
                    # all) went back to the pool and every retry and later read got one.
                    # Like SQLAlchemy on a disconnect it sees, drop the whole pool: after a
                    # restart every pooled connection is dead, and the retry needs a live one.
                    if is_disconnect(exc):
                        await conn.invalidate()
                        await self._engine.dispose(close=False)
                    raise
                return rows

        return await self._retry.run(attempt)


__all__ = [
    "ERASED_PREFIX", "WRITE_LOCK_KEY", "PostgresEventLog", "PostgresSnapshotStore", "not_erased",
]
