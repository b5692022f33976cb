"""What the HTTP routes work with: a frozen holder of the ingress's parts.

The composition root (:mod:`serve.composition`) builds one :class:`ApiContext` per ingress
process, whole: nothing is assigned to it afterwards. The parts do the work: the
:class:`~actors.shard_router.ShardRouter` routes a user's calls to their shard, the
:class:`~actors.ingress_control.IngressControl` starts the ingress, holds the item catalog
and resizes through the :class:`~actors.shard_controller.ShardController`, and the catalog's
publication is asked through it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from actors.ingress_control import IngressControl
from actors.shard_router import Shard, ShardRouter
from serve.api.auth import Authenticator
from serve.experiments import Experiments
from serve.settings.sections import ApiSettings, SecuritySettings
from serve.summary_service import SummaryService
from storage.catalog import ItemCatalog
from storage.stores import Stores

T = TypeVar("T")


class Retraining(Protocol):
    """The item-space retrain, as the API drives it (the catalog publication, in this
    process or behind its Ray actor)."""

    async def note_events(self, count: int) -> None: ...
    async def retrain(self) -> dict[str, Any]: ...
    async def stats(self) -> dict[str, Any]: ...


# The inspector's login cookie policy when none is given (the security section's default).
_SECURE_COOKIE = SecuritySettings.model_construct().inspector_secure_cookie  # no secrets read


EncoderStats = Callable[[], Awaitable[Mapping[str, Any] | None]]


async def no_encoder_stats() -> Mapping[str, Any] | None:
    """The encoder's stats where there is no encoder deployment to ask."""
    return None


@dataclass(frozen=True)
class ApiContext:
    """The ingress's dependencies, given whole by the composition root.

    Attributes:
        stores: this process's stores (the log, tokens, impressions, ...).
        router: user -> shard, following the cluster's topology.
        control: start-up, the item catalog, publication and resizes.
        limits: request limits (the settings' api section).
        encoder_stats: the encoder deployment's stats for ``/metrics``.
        retraining: the item-space retrain; None when no variant ranks with it.
        auth: token checks; None with ``PORTRAIT_AUTH=off``.
        pseudonym: user id -> stored id; None when ids are stored as given.
        experiments: impressions and experiment reports.
        summaries: ``GET /v1/users/{id}/summary``; None: the template's only.
        secure_cookie: the inspector's login cookie policy (``auto``, ``on``, ``off``).
    """

    stores: Stores
    router: ShardRouter
    control: IngressControl
    limits: ApiSettings = ApiSettings()
    encoder_stats: EncoderStats = no_encoder_stats
    retraining: Retraining | None = None
    auth: Authenticator | None = None
    pseudonym: Callable[[str], str] | None = None
    experiments: Experiments | None = None
    summaries: SummaryService | None = None
    secure_cookie: str = _SECURE_COOKIE

    def internal(self, user_id: str) -> str:
        """The id the log and the shards know the user by."""
        return user_id if self.pseudonym is None else self.pseudonym(user_id)

    @property
    def catalog(self) -> ItemCatalog:
        """The item catalog (:attr:`IngressControl.catalog`)."""
        return self.control.catalog

    async def ready(self) -> None:
        """Wait for the ingress's start-up (:meth:`IngressControl.ready`)."""
        await self.control.ready()

    async def on_owner(self, user_id: str, call: Callable[[Shard], Awaitable[T]]) -> T:
        """``call`` on the shard that owns the user (:meth:`ShardRouter.on_owner`)."""
        return await self.router.on_owner(user_id, call)

    async def close(self) -> None:
        """Write the queued impressions, stop the control tick and pending retirements
        (their shards close with the system; on Ray, the next resize or a redeploy retires
        them)."""
        if self.experiments is not None:
            await self.experiments.close()
        await self.control.close()


__all__ = ["ApiContext", "EncoderStats", "Retraining", "Shard"]
