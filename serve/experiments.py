"""Online experiments in the ingress: impressions of every recommendation response, the
displayed-items reports, and the experiment report.

The pure parts are in :mod:`portrait` (impressions, attribution, interleaving, the report's
statistics); the recorder in :mod:`serve.impression_recorder`; this module ties them to a running
ingress and its stores.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from actors.shard_service import Recommendations
from portrait import codec
from portrait.attribution import attribute
from portrait.errors import NotFound, PortraitError
from portrait.experiment_report import build_report
from portrait.experiments import Experiment
from portrait.impression import Impression, check_shown
from serve.impression_recorder import ImpressionRecorder
from storage.attribution import attribution_inputs
from storage.stores import Stores


class UnknownExperiment(NotFound):
    """No experiment of that name is configured or has served anything."""

    def __init__(self, name: str) -> None:
        super().__init__("name", f"no experiment {name!r}: none is configured under that name "
                                 "and no recommendation was served in one")


class UnknownImpression(NotFound):
    """No recommendation response of that id was served to that user."""

    def __init__(self, request_id: str) -> None:
        super().__init__("request_id", f"no recommendation response {request_id!r} for "
                                       "this user")


def new_request_id() -> str:
    return uuid.uuid4().hex


class Experiments:
    """One ingress's experiment bookkeeping (see the module docstring)."""

    def __init__(
        self, stores: Stores, experiment: Experiment | None, *, window_s: float = 3600.0,
        recorder: ImpressionRecorder | None = None,
    ) -> None:
        self._stores = stores
        self.experiment = experiment
        self.name = experiment.name if experiment is not None else ""
        self.window_s = window_s
        self.recorder = recorder or ImpressionRecorder(stores.impressions, window_s=window_s)

    def served(self, request_id: str, out: Recommendations) -> None:
        """Queue the impression of a response (no I/O; see :class:`ImpressionRecorder`)."""
        self.recorder.record(Impression(
            request_id, out.user_id, self.name, out.variant, out.config_hash, out.item_space,
            tuple(r.item_id for r in out.items), time.time(), out.teams, ranker=out.ranker,
        ))

    def observe(
        self, raw: Sequence[Mapping[str, Any]], results: Sequence[Mapping[str, Any]],
        internal: Callable[[str], str],
    ) -> None:
        """Count the attribution of a request's newly recorded item events (``results`` in
        request order, as the ingest answered) against the lists served here."""
        if not len(self.recorder.attributor):
            return  # nothing served by this replica in the window: nothing to attribute
        fresh = []
        for event, result in zip(raw, results, strict=True):
            if "seq" not in result or result.get("duplicate") or "item_id" not in event:
                continue
            try:  # validated by the ingest already; under the id the log knows the user by
                fresh.append(codec.from_dict({**event, "user_id": internal(event["user_id"])}))
            except PortraitError:
                continue
        self.recorder.observe(fresh)

    async def set_shown(self, request_id: str, user_id: str, item_ids: Sequence[str]) -> int:
        """Record which served items the client displayed; returns how many.

        Raises:
            UnknownImpression: no such response for this user (another user's is unknown
                too: ids are not confirmed to strangers).
            InvalidField: an item that was not served.
        """
        imp = self.recorder.buffered(request_id) or self.recorder.recent(request_id)
        if imp is None:
            imp = await self._stores.impressions.get(request_id)
        if imp is None or imp.user_id != user_id:
            raise UnknownImpression(request_id)
        shown = check_shown(imp, tuple(item_ids))
        if not self.recorder.set_shown_buffered(request_id, shown):
            if not await self._stores.impressions.set_shown(request_id, shown):
                raise UnknownImpression(request_id)
            self.recorder.note_shown(dataclasses.replace(imp, shown=shown))
        return len(shown)

    async def forget_user(self, user_id: str) -> None:
        """Erasure: the user's queued impressions go before the store's rows are deleted."""
        await self.recorder.flush()
        self.recorder.forget_user(user_id)

    async def report(self, name: str, catalog_size: int) -> dict[str, Any]:
        """The report of experiment ``name`` from the store and the log (what was queued is
        written first, so the report includes every response served so far)."""
        await self.recorder.flush()
        return await experiment_report(self._stores, name, catalog_size,
                                       window_s=self.window_s, experiment=self.experiment)

    async def close(self) -> None:
        await self.recorder.close()


async def experiment_report(
    stores: Stores, name: str, catalog_size: int, *, window_s: float,
    experiment: Experiment | None = None,
) -> dict[str, Any]:
    """Rebuild the attribution of experiment ``name`` and report it.

    Raises:
        UnknownExperiment: nothing was served under that name, and it is not the configured
            experiment.
    """
    served, events = await attribution_inputs(stores.impressions, stores.events, name)
    configured = experiment is not None and experiment.name == name
    if not served and not configured:
        raise UnknownExperiment(name)
    variants = experiment.variant_names if configured and experiment is not None else ()
    return build_report(name, served, attribute(served, events, window_s), catalog_size,
                        variants=variants, window_s=window_s)


def _ci(d: Mapping[str, float], pct: bool = True) -> str:
    def f(x: float) -> str:
        return f"{100 * x:.2f}%" if pct else f"{x:.4f}"

    return f"{f(d['value'])} [{f(d['ci_low'])}, {f(d['ci_high'])}]"


def format_report(report: Mapping[str, Any]) -> str:
    """The report as text, for ``portrait experiment report``."""
    lines = [f"experiment {report['experiment']!r} ({report['mode']}), catalog of "
             f"{report['catalog_size']:,} items; 95% intervals"]
    for name, v in report["variants"].items():
        lines.append(f"  {name}: {v['users']:,} users, {v['impressions']:,} impressions, "
                     f"{v['interactions']:,} attributed interactions")
        lines.append(f"    CTR {_ci(v['ctr'])}  conversion {_ci(v['conversion'])}  "
                     f"MRR {_ci(v['mrr'], pct=False)}  coverage {_ci(v['coverage'])}")
    for name, d in report["differences"].items():
        if d is None:
            continue
        lines.append(f"  {name} - {report['control']}: CTR {_ci(d['ctr'])} "
                     f"(p={d['ctr']['p_value']:.3g})  conversion {_ci(d['conversion'])}  "
                     f"MRR {_ci(d['mrr'], pct=False)}  coverage {_ci(d['coverage'])}")
    pref = report.get("interleaving")
    if pref:
        for unit in ("by_user", "by_impression"):
            b = pref[unit]
            lines.append(f"  interleaving {unit.replace('_', ' ')}: {pref['variant']} preferred "
                         f"over {pref['over']} {b['wins']} times, {b['losses']} the other way, "
                         f"{b['ties']} ties; share {_ci(b['share'])}, sign test "
                         f"p={b['p_value']:.3g}")
    ignored = {k: n for k, n in report["ignored_request_ids"].items() if n}
    if ignored:
        lines.append("  ignored request ids: " + ", ".join(f"{k} {n}" for k, n in ignored.items()))
    lines += [f"  warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)
