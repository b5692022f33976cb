"""Portrait's Python client: :class:`Client` (sync) and :class:`AsyncClient`, over httpx.

Both send the same requests (built once, in :class:`_Calls`) and read answers the same way:
errors raise the classes of :mod:`portrait_client.errors` (with the API's ``field``), and 503
(the service or one of its parts restarting), 429 (over a rate limit) and lost connections are
retried after ``Retry-After`` (or an exponential backoff), at most ``max_retries`` times. That
is safe for every call: reads are idempotent, catalog upserts are, and events carry an id
assigned when they are built (:func:`event`), which the service deduplicates, so a batch sent
twice is recorded once.

    from portrait_client import Client, event

    with Client("http://127.0.0.1:8000", token=...) as portrait:
        portrait.post_events([event("view", "alice", item_id="260")])
        for item in portrait.recommendations("alice", k=5)["items"]:
            print(item["item_id"], item["title"])
"""

from __future__ import annotations

import array
import asyncio
import base64
import os
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

import httpx

from portrait_client.errors import PortraitError, Unavailable, from_response

RETRY_STATUSES = frozenset({429, 503})
# The API's largest batch by default (PORTRAIT_MAX_BATCH_EVENTS); smaller is fine.
DEFAULT_BATCH = 500


class EventResult(TypedDict, total=False):
    event_id: str
    user_id: str
    seq: int
    position: int
    duplicate: bool
    error: str
    field: str
    message: str


class Recommendation(TypedDict):
    item_id: str
    score: float
    title: str | None
    # {"kind": "similar_to" | "interest" | "keyword" | "popular", "value": ..., "weight": ...}
    reasons: list[dict[str, Any]]


class Recommendations(TypedDict):
    user_id: str
    variant: str
    ranker: str  # "blend", or "learned:<item space version>"
    as_of_seq: int
    items: list[Recommendation]


def event(
    type: str,
    user_id: str,
    *,
    occurred_at: float | None = None,
    event_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """One event as the API takes it, with an id fixed now (so a retry is a duplicate, not a
    second event) and the time now unless given. ``fields``: ``item_id``, ``rating``,
    ``text``, ``query`` or ``attributes``, as the event type needs (see the README)."""
    return {"type": type, "event_id": event_id or uuid.uuid4().hex, "user_id": user_id,
            "occurred_at": time.time() if occurred_at is None else occurred_at, **fields}


def vector_b64(values: Iterable[float]) -> str:
    """An item's own vector as ``vector_b64`` (base64 of little-endian float32): about a third
    of the JSON list's size, for bulk loads. Send it with ``vector_model``, the service's
    encoder model id: ``{"id": ..., "title": ..., "vector_b64": vector_b64(v),
    "vector_model": "sentence-transformers/all-MiniLM-L6-v2"}``."""
    packed = array.array("f", values)
    if sys.byteorder == "big":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


@dataclass
class SendSummary:
    """What :meth:`Client.send_events` did.

    Attributes:
        recorded: events newly recorded.
        duplicates: events the service already had (a resumed or repeated send).
        failed: per-event results that carry an ``error`` (their user's batch was refused;
            nothing of it was written), with the event's index in what was sent.
        batches: requests made (retries not counted).
    """

    recorded: int = 0
    duplicates: int = 0
    failed: list[tuple[int, EventResult]] = field(default_factory=list)
    batches: int = 0

    def add(self, offset: int, results: Sequence[EventResult]) -> None:
        self.batches += 1
        for i, r in enumerate(results):
            if "error" in r:
                self.failed.append((offset + i, r))
            elif r.get("duplicate"):
                self.duplicates += 1
            else:
                self.recorded += 1


@dataclass(frozen=True)
class _Call:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None


class _Calls:
    """Every request the clients make, built in one place."""

    @staticmethod
    def events(events: Sequence[Mapping[str, Any]]) -> _Call:
        return _Call("POST", "/v1/events", json={"events": list(events)})

    @staticmethod
    def recommendations(user_id: str, k: int, diversity: float | None, tags: Sequence[str],
                        exclude: Sequence[str]) -> _Call:
        params: dict[str, Any] = {"k": k}
        if diversity is not None:
            params["diversity"] = diversity
        if tags:
            params["tags"] = list(tags)
        if exclude:
            params["exclude"] = list(exclude)
        return _Call("GET", f"/v1/users/{_quote(user_id)}/recommendations", params)

    @staticmethod
    def profile(user_id: str, at_seq: int | None, at_time: float | None, top: int | None
                ) -> _Call:
        params = {k: v for k, v in (("at_seq", at_seq), ("at_time", at_time), ("top", top))
                  if v is not None}
        return _Call("GET", f"/v1/users/{_quote(user_id)}/profile", params)

    @staticmethod
    def changes(user_id: str, from_seq: int, to_seq: int | None) -> _Call:
        params: dict[str, Any] = {"from_seq": from_seq}
        if to_seq is not None:
            params["to_seq"] = to_seq
        return _Call("GET", f"/v1/users/{_quote(user_id)}/profile/changes", params)

    @staticmethod
    def audit(user_id: str, after: int, limit: int) -> _Call:
        return _Call("GET", f"/v1/users/{_quote(user_id)}/events",
                     {"after": after, "limit": limit})

    @staticmethod
    def upsert_items(items: Sequence[Mapping[str, Any]]) -> _Call:
        return _Call("POST", "/v1/items", json={"items": list(items)})

    @staticmethod
    def item(item_id: str) -> _Call:
        return _Call("GET", f"/v1/items/{_quote(item_id)}")

    @staticmethod
    def erase_user(user_id: str) -> _Call:
        return _Call("DELETE", f"/v1/users/{_quote(user_id)}")

    @staticmethod
    def ready() -> _Call:
        return _Call("GET", "/readyz")


def _quote(segment: str) -> str:
    from urllib.parse import quote

    return quote(segment, safe="")


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("PORTRAIT_TOKEN")
    return {"authorization": f"Bearer {token}"} if token else {}


def _outcome(response: httpx.Response) -> Any:
    """The body of a success (200, or 207 for a partly refused batch); raises otherwise."""
    try:
        body = response.json()
    except ValueError:
        body = response.text
    if response.status_code in (200, 207):
        return body
    # A batch whose every user was refused comes back with their common status and the
    # per-event results; the caller reads them like a 207.
    if isinstance(body, dict) and "results" in body:
        return body
    raise from_response(response.status_code, body)


def _delay(attempt: int, response: httpx.Response | None) -> float:
    if response is not None:
        header = response.headers.get("retry-after", "")
        if header.isdigit():
            return min(30.0, float(header))
    return float(min(10.0, 0.2 * 2**attempt) * random.uniform(0.5, 1.0))


def _batches(events: Iterable[Mapping[str, Any]], size: int) -> Iterator[list[Mapping[str, Any]]]:
    batch: list[Mapping[str, Any]] = []
    for e in events:
        batch.append(e)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Client:
    """Synchronous client.

    Args:
        base_url: where the service listens.
        token: an API token; default ``$PORTRAIT_TOKEN``.
        timeout: seconds per request.
        max_retries: tries after the first, for 503, 429 and lost connections.
        transport: an httpx transport (tests: ``httpx.ASGITransport`` is async; use
            :class:`AsyncClient` for that).
    """

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, headers=_headers(token),
                                  transport=transport)
        self._retries = max_retries

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call) -> Any:
        for attempt in range(self._retries + 1):
            try:
                response = self._http.request(call.method, call.path, params=call.params,
                                              json=call.json)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise Unavailable(0, type(exc).__name__, str(exc)) from exc
                time.sleep(_delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self._retries:
                time.sleep(_delay(attempt, response))
                continue
            return _outcome(response)
        raise AssertionError("unreachable")

    def post_events(self, events: Sequence[Mapping[str, Any]]) -> list[EventResult]:
        """One batch; per event its ``seq`` (and ``duplicate``), or the ``error`` that refused
        its user's batch. Raises for errors of the whole request (422 names the field)."""
        results: list[EventResult] = self._send(_Calls.events(events))["results"]
        return results

    def send_events(self, events: Iterable[Mapping[str, Any]], *,
                    batch_size: int = DEFAULT_BATCH) -> SendSummary:
        """Any number of events, in batches; per-user refusals are collected, not raised."""
        summary, offset = SendSummary(), 0
        for batch in _batches(events, batch_size):
            summary.add(offset, self.post_events(batch))
            offset += len(batch)
        return summary

    def recommendations(self, user_id: str, k: int = 10, *, diversity: float | None = None,
                        tags: Sequence[str] = (), exclude: Sequence[str] = ()
                        ) -> Recommendations:
        result: Recommendations = self._send(
            _Calls.recommendations(user_id, k, diversity, tags, exclude))
        return result

    def profile(self, user_id: str, *, at_seq: int | None = None, at_time: float | None = None,
                top: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Calls.profile(user_id, at_seq, at_time, top))
        return result

    def changes(self, user_id: str, from_seq: int, to_seq: int | None = None
                ) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Calls.changes(user_id, from_seq, to_seq))
        return result

    def audit(self, user_id: str, *, page: int = 500) -> Iterator[dict[str, Any]]:
        """The user's recorded events, oldest first, page by page."""
        after: int | None = 0
        while after is not None:
            body = self._send(_Calls.audit(user_id, after, page))
            yield from body["events"]
            after = body["next_after"]

    def upsert_items(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Calls.upsert_items(items))
        return result

    def item(self, item_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Calls.item(item_id))
        return result

    def erase_user(self, user_id: str) -> dict[str, Any]:
        """Erase the user (scope ``users:erase``); returns the erasure record. Raises
        :class:`NotFound` (or :class:`Gone` when already erased) if nothing is stored."""
        result: dict[str, Any] = self._send(_Calls.erase_user(user_id))
        return result

    def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = self._send(_Calls.ready())
        return result


class AsyncClient:
    """The asynchronous client: the same calls as :class:`Client`, awaited."""

    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, token: str | None = None,
                 timeout: float = 60.0, max_retries: int = 5,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout,
                                       headers=_headers(token), transport=transport)
        self._retries = max_retries

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call) -> Any:
        for attempt in range(self._retries + 1):
            try:
                response = await self._http.request(call.method, call.path,
                                                    params=call.params, json=call.json)
            except httpx.TransportError as exc:
                if attempt == self._retries:
                    raise Unavailable(0, type(exc).__name__, str(exc)) from exc
                await asyncio.sleep(_delay(attempt, None))
                continue
            if response.status_code in RETRY_STATUSES and attempt < self._retries:
                await asyncio.sleep(_delay(attempt, response))
                continue
            return _outcome(response)
        raise AssertionError("unreachable")

    async def post_events(self, events: Sequence[Mapping[str, Any]]) -> list[EventResult]:
        results: list[EventResult] = (await self._send(_Calls.events(events)))["results"]
        return results

    async def send_events(self, events: Iterable[Mapping[str, Any]], *,
                          batch_size: int = DEFAULT_BATCH) -> SendSummary:
        summary, offset = SendSummary(), 0
        for batch in _batches(events, batch_size):
            summary.add(offset, await self.post_events(batch))
            offset += len(batch)
        return summary

    async def recommendations(self, user_id: str, k: int = 10, *,
                              diversity: float | None = None, tags: Sequence[str] = (),
                              exclude: Sequence[str] = ()) -> Recommendations:
        result: Recommendations = await self._send(
            _Calls.recommendations(user_id, k, diversity, tags, exclude))
        return result

    async def profile(self, user_id: str, *, at_seq: int | None = None,
                      at_time: float | None = None, top: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.profile(user_id, at_seq, at_time, top))
        return result

    async def changes(self, user_id: str, from_seq: int, to_seq: int | None = None
                      ) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.changes(user_id, from_seq, to_seq))
        return result

    async def audit(self, user_id: str, *, page: int = 500) -> AsyncIterator[dict[str, Any]]:
        after: int | None = 0
        while after is not None:
            body = await self._send(_Calls.audit(user_id, after, page))
            for e in body["events"]:
                yield e
            after = body["next_after"]

    async def upsert_items(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.upsert_items(items))
        return result

    async def item(self, item_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.item(item_id))
        return result

    async def erase_user(self, user_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.erase_user(user_id))
        return result

    async def ready(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._send(_Calls.ready())
        return result


__all__ = ["AsyncClient", "Client", "EventResult", "PortraitError", "Recommendation",
           "Recommendations", "SendSummary", "event"]
