"""Portrait's error tree.

Every error a caller can act on is one of these; adapters translate driver exceptions into
them so that the HTTP layer and the CLI map a short, documented list to responses::

    PortraitError
    ├── InvalidInput (ValueError)        bad input; names the offending field -> HTTP 422
    │   ├── UnknownEventType
    │   ├── MissingField
    │   ├── InvalidField
    │   ├── PayloadTooLarge                                                    -> HTTP 413
    │   └── BatchTooLarge                more entries than a batch may hold    -> HTTP 413
    ├── VersionConflict                  stale expected version                -> HTTP 409
    ├── EventIdConflict                  event_id reused for a different event -> HTTP 409
    ├── ResizeInProgress                 another shard resize is under way     -> HTTP 409
    ├── MissingFeatures                  fold called without a text event's vector
    ├── MixedTextSpaces                  text vectors of two encoders met (never summed)
    ├── NotEnoughInteractions            too little data to train collaborative vectors
    ├── SnapshotIncompatible             a snapshot of another format; replay the log instead
    ├── EncoderUnavailable               the text encoder did not answer; retry -> 503
    ├── ShardUnavailable                 a shard process is down (Ray restarts it) -> 503
    │   └── NotOwner                     the user moved to another shard (re-routed)  -> 503
    ├── UnknownUser / UnknownItem        nothing recorded under that id       -> HTTP 404
    │   └── UserErased                   the user was erased (nothing since)  -> HTTP 410
    └── StorageError                     the event store failed
        ├── StorageUnavailable           transient; retried with a bound, then raised -> 503
        └── StorageIntegrityError        the store holds something it must not
"""

from __future__ import annotations


def _rebuild(
    cls: type[PortraitError], args: tuple[object, ...], state: dict[str, object]
) -> PortraitError:
    err = cls.__new__(cls)
    Exception.__init__(err, *args)
    err.__dict__.update(state)
    return err


class PortraitError(Exception):
    """Base class of every error Portrait raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # The subclasses' constructors take structured arguments (field, reason...), which
        # Exception's default pickling does not know; errors cross process boundaries (Ray
        # actors, Serve replicas), so rebuild them from their message and attributes.
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


class InvalidInput(PortraitError, ValueError):
    """Input that Portrait refuses. ``field`` names the offending field (dotted path)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class UnknownEventType(InvalidInput):
    """An event type that no codec entry knows."""

    def __init__(self, event_type: object) -> None:
        super().__init__("type", f"unknown event type {event_type!r}")


class MissingField(InvalidInput):
    """A required field is absent."""

    def __init__(self, field: str) -> None:
        super().__init__(field, "field required")


class InvalidField(InvalidInput):
    """A field is present but has the wrong type or an out-of-range value."""


class PayloadTooLarge(InvalidInput):
    """An encoded event (or a batch) exceeds the configured size limit."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        super().__init__(field, f"{size} bytes exceeds the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class BatchTooLarge(InvalidInput):
    """A batch holds more entries than the configured limit."""

    def __init__(self, field: str, count: int, limit: int) -> None:
        super().__init__(field, f"{count} entries exceed the batch limit of {limit}")
        self.count = count
        self.limit = limit


class VersionConflict(PortraitError):
    """An append's expected version is not the stream's current version."""

    def __init__(self, user_id: str, expected: int, actual: int) -> None:
        super().__init__(f"user {user_id!r}: expected version {expected}, stream is at {actual}")
        self.user_id = user_id
        self.expected = expected
        self.actual = actual


class EventIdConflict(PortraitError):
    """An event_id already recorded for a different user or with different content."""

    def __init__(self, event_id: str, reason: str) -> None:
        super().__init__(f"event_id {event_id!r}: {reason}")
        self.event_id = event_id


class MissingFeatures(PortraitError):
    """The fold was given a text event without its encoded features."""


class MixedTextSpaces(PortraitError):
    """Text vectors of two encoders were about to be added up or compared: a profile's text
    part folded by one encoder version and a feature or an item space of another. Each
    encoder has its own space, so the sum would mean nothing; the caller re-folds the
    profile's text from the log under one version instead (see "Encoder versions")."""

    def __init__(self, have: str | None, got: str, where: str) -> None:
        super().__init__(f"{where}: text of encoder {got!r} cannot meet text of "
                         f"encoder {have!r}")
        self.have = have
        self.got = got


class SnapshotIncompatible(PortraitError):
    """A stored snapshot was written in a format this code cannot read (an older profile
    state). Snapshots are only shortcuts: treat it as absent and replay the user's log."""


class NotEnoughInteractions(PortraitError):
    """The event log holds too few interactions to train collaborative item vectors; the
    service keeps ranking with what it has (text vectors, or the previous item space)."""


class EncoderUnavailable(PortraitError):
    """The text encoder could not encode (its deployment is down or overloaded). Nothing
    that needed it was written; safe to retry later."""


class ShardUnavailable(PortraitError):
    """The shard hosting a user did not answer (its process died and is restarting).
    Nothing of the call was acknowledged; safe to retry."""


class NotOwner(ShardUnavailable):
    """The shard no longer owns the user (the shard count changed and the user moved). The
    caller routes again with the new topology; a client sees a 503 only if that is not
    known yet."""


class ResizeInProgress(PortraitError):
    """Another resize of the shard set is under way; retry when it is done."""


class Unauthenticated(PortraitError):
    """No token, a malformed one, or one that is unknown or revoked (401)."""


class Forbidden(PortraitError):
    """A valid token without the scope the call needs (403)."""


class RateLimited(PortraitError):
    """The token sent more than its allowance (429, with ``retry_after_s``)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class NotReady(PortraitError):
    """The service has not finished starting (or its start-up failed and will be tried again
    by the next request). Safe to retry."""


class NotFound(PortraitError):
    """Nothing is recorded under an id. ``field`` names the id's parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownUser(NotFound):
    """No events are recorded for the user."""

    def __init__(self, user_id: str) -> None:
        super().__init__("user_id", f"no events for user {user_id!r}")


class UserErased(NotFound):
    """The user was erased, and nothing has been recorded for the id since."""

    def __init__(self, user_id: str, erased_at: float) -> None:
        super().__init__("user_id", f"user {user_id!r} was erased; nothing has been recorded "
                                    "for this id since")
        self.erased_at = erased_at


class UnknownItem(NotFound):
    """No catalog item has the id."""

    def __init__(self, item_id: str) -> None:
        super().__init__("item_id", f"no item {item_id!r}")


class StorageError(PortraitError):
    """The event store failed in a way that is not the caller's fault."""


class StorageUnavailable(StorageError):
    """The store could not be reached, after bounded retries. Safe to retry later."""


class StorageIntegrityError(StorageError):
    """The store refused a write for an integrity reason Portrait did not anticipate."""
