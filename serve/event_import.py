"""``portrait import-events``: history from a file into the running service, through its API.

Events go through ``POST /v1/events`` like any producer's (validated, appended, folded), in
batches, with the Python client's retries. Event ids come from the file (or are derived from
the row's values, see :mod:`storage.datasets.generic`), so an import that was interrupted can
simply be run again: what was already recorded comes back as duplicates.

A bad row never stops the import or takes its batch down: rows the parser refuses are
reported at once; a row the service refuses as a whole-request 422 (``events[i].field``) is
taken out of its batch, reported, and the rest of the batch sent again; a user whose batch
is refused (an event id reused with other content) has its rows sent again one by one, so
only the row at fault is reported. The report names
each rejected row's place in the file, the field and the reason.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from portrait import codec
from portrait.errors import InvalidField
from portrait.events import Event
from portrait_client import Client, InvalidRequest

_EVENT_INDEX = re.compile(r"events\[(\d+)\]\.?(.*)")


@dataclass
class Rejected:
    where: str  # "interactions.csv:7", or "event 12" for a data set
    field: str
    reason: str


@dataclass
class ImportReport:
    read: int = 0
    recorded: int = 0
    duplicates: int = 0
    rejected: list[Rejected] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events_per_s(self) -> float:
        return (self.recorded + self.duplicates) / self.seconds if self.seconds else 0.0


def import_events(
    client: Client,
    rows: Iterable[tuple[str, Event | InvalidField]],
    *,
    batch_size: int = 500,
    progress: Callable[[int], None] = lambda n: None,
) -> ImportReport:
    """Send ``rows`` (place in the source, event or the parser's error) in batches."""
    report = ImportReport()
    started = time.perf_counter()
    pending: list[tuple[str, dict[str, Any]]] = []
    for where, item in rows:
        report.read += 1
        if isinstance(item, InvalidField):
            column = item.field.rsplit(":", 1)[-1]
            report.rejected.append(Rejected(where, column, item.reason))
            progress(1)
            continue
        wire = codec.to_dict(item)
        wire.pop("schema_version", None)
        pending.append((where, wire))
        if len(pending) >= batch_size:
            _send(client, pending, report)
            progress(len(pending))
            pending = []
    if pending:
        _send(client, pending, report)
        progress(len(pending))
    report.seconds = time.perf_counter() - started
    return report


def _send(client: Client, batch: list[tuple[str, dict[str, Any]]], report: ImportReport) -> None:
    batch = list(batch)
    while batch:
        try:
            results = client.post_events([wire for _, wire in batch])
        except InvalidRequest as exc:
            match = _EVENT_INDEX.fullmatch(exc.field or "")
            if match is None or int(match.group(1)) >= len(batch):
                raise  # about the request itself (too large a batch): not a row's fault
            where, _ = batch.pop(int(match.group(1)))
            reason = exc.message.removeprefix(f"{exc.field}: ")  # the index is the batch's
            report.rejected.append(Rejected(where, match.group(2) or "event", reason))
            continue
        refused = []
        for (where, wire), result in zip(batch, results, strict=True):
            if "error" in result:
                refused.append(((where, wire), result))
            elif result.get("duplicate"):
                report.duplicates += 1
            else:
                report.recorded += 1
        if len(batch) > 1:
            # A user's rows are refused together (all-or-nothing per user): send each of
            # them alone, so that only the row at fault is rejected.
            for row, _ in refused:
                _send(client, [row], report)
        else:
            for (where, _), result in refused:
                report.rejected.append(Rejected(
                    where, str(result.get("field") or result["error"]),
                    str(result.get("message", result["error"]))))
        return


__all__ = ["ImportReport", "Rejected", "import_events"]
