"""What an error is called in an answer: Portrait's class, never the class Ray wraps it in."""

from __future__ import annotations

from ray.exceptions import RayTaskError

from portrait.errors import NotOwner, PortraitError, ShardUnavailable
from serve.api.errors import error_body, error_name


def as_ray_raises_it(error: PortraitError) -> PortraitError:
    """``error`` as a caller of a Ray actor receives it: an instance of a class Ray makes,
    named ``RayTaskError(<cause>)``, that derives from both."""
    try:
        raise error
    except PortraitError as exc:
        wrapped = RayTaskError("retrain", "traceback", exc).as_instanceof_cause()
    assert isinstance(wrapped, type(error))
    assert type(wrapped).__name__ == f"RayTaskError({type(error).__name__})"
    return wrapped  # type: ignore[no-any-return]


def test_a_wrapped_error_is_named_by_its_cause() -> None:
    """Measured: a retrain after 2 -> 4 -> 1 shards answered
    ``{"error": "RayTaskError(ShardUnavailable)"}``."""
    wrapped = as_ray_raises_it(ShardUnavailable("shard portrait-shard-3 is restarting"))
    assert error_name(wrapped) == "ShardUnavailable"
    assert error_body(wrapped)["error"] == "ShardUnavailable"
    assert error_name(as_ray_raises_it(NotOwner("moved"))) == "NotOwner"


def test_our_own_errors_keep_their_names() -> None:
    assert error_name(NotOwner("moved")) == "NotOwner"


def test_an_unavailable_shard_speaks_of_no_user() -> None:
    """The same answer serves calls that have no user (a retrain, a resize)."""
    message = error_body(ShardUnavailable("x"))["message"]
    assert "user" not in message and "retry" in message
