"""Output streaming (``fal_client.stream``, ``fal.stream``): ``POST /run/{endpoint}/stream``,
and ``POST {run host}/{endpoint}/stream``, answering ``text/event-stream``.

The request goes through the queue like any other (durable, billed, in the history,
cancellable). While it runs, each change of progress is one ``data:`` event
(``{"images": [{url, content_type}], "progress": {step, total}}`` for image endpoints,
the preview image when the worker made one); the last event is the full result, in the
endpoint's output shape. Relayed endpoints send the progress the relay mirrors from the
upstream's queue, or, when the upstream reports none, their result as the one event
(an upstream's own ``/stream`` is not relayed).

The response starts with the first event (or, for a request still queued after a
keep-alive interval, with a keep-alive comment), so a request that fails before that
(input refused when it starts, model missing, timed out in the queue) is an ordinary
error response with fal's status code and body, which both clients raise. A failure
after events were sent ends the stream with an ``event: error`` carrying the error body
and then aborts the connection, so neither client mistakes it for a completed stream.
A client that disconnects cancels the request, as fal does for its synchronous routes."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Send

from openfal.endpoints.catalog import CATALOG
from openfal.endpoints.ids import normalize_endpoint, parse_request_path
from openfal.errors import UnknownEndpoint
from openfal.http import queue_routes
from openfal.http.credentials import TOKEN_PARAM, key_or_token
from openfal.http.deps import current_key, runtime
from openfal.models import ApiKey, RequestRecord, Status
from openfal.service import QueueService, Result

router = APIRouter()
log = logging.getLogger("openfal.http")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SUFFIX = "/stream"


@dataclass(frozen=True, slots=True)
class Partial:
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Final:
    result: Result


class KeepAlive:
    pass


Event = Partial | Final | KeepAlive


class StreamFailed(Exception):
    """Raised after an ``event: error`` to abort the connection (no clean end of body)."""


class AbortableStream(StreamingResponse):
    """A StreamingResponse that, on StreamFailed, returns without the final empty body
    message: the server then closes the connection mid-body, which both clients report
    as an error (a clean end would read as a completed stream)."""

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk.encode() if isinstance(chunk, str) else chunk, "more_body": True})
        except StreamFailed as exc:
            log.info("%s; the stream is aborted", exc)
            return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


@router.api_route("/run/{path:path}/stream", methods=["POST", "GET"], tags=["queue"], summary="Run and stream partial outputs (SSE)")
async def run_stream(path: str, request: Request) -> Response:
    return await stream(path, request, await _stream_key(request, path))


@router.post("/{path:path}/stream", tags=["queue"], include_in_schema=False)
async def run_host_stream(path: str, request: Request) -> Response:
    """On a run host (``OPENFAL_RUN_HOSTS``) this is fal.run's ``/stream``; on the queue
    host it is an ordinary submit to an endpoint whose id ends in ``stream``."""
    if request.url.hostname in runtime(request).settings.run_hosts:
        return await stream(path, request, await _stream_key(request, path))
    return await queue_routes.submit(f"{path}{SUFFIX}", request, await current_key(request))


@router.get("/{path:path}/status/stream", include_in_schema=False)
async def status_stream(path: str, request: Request, logs: str | None = None) -> Response:
    """The queue's status stream (served by the queue routes), also for the JS client's
    ``streamStatus({connectionMode: "client"})``, which sends a ``/tokens/`` token as
    ``?fal_jwt_token=`` instead of a key."""
    full = f"{path}/status/stream"
    target = parse_request_path(full)
    key = await key_or_token(request, target.app if target else None)
    return await queue_routes.read(full, request, logs, key)


async def _stream_key(request: Request, path: str) -> ApiKey | None:
    """The caller's key, or (the JS client's ``connectionMode: "client"``, which calls
    with ``?fal_jwt_token=`` and no Authorization) the key behind a ``/tokens/`` token."""
    return await key_or_token(request, normalize_endpoint(path))


async def stream(path: str, request: Request, key: ApiKey | None) -> Response:
    """Submit ``path`` (the endpoint id before ``/stream``) and stream it."""
    if normalize_endpoint(path) is None:
        raise UnknownEndpoint(f"Path /{path}{SUFFIX} not found")
    body = None
    if request.method == "GET":
        body = {name: value for name, value in queue_routes.query_input(request).items() if name != TOKEN_PARAM}
    record = (await queue_routes._submit(request, path, key, body=body)).record
    service = runtime(request).service
    spec = CATALOG.get(record.endpoint_id)
    events = _follow(service, record, key, images=spec is not None and spec.kind == "image")
    pump = _until_disconnected(request, events)
    first = await _first(pump)
    if first is None:  # the caller left before anything happened
        await pump.aclose()
        await service.abandon(record)
        return Response(status_code=499)
    if isinstance(first, Final) and first.result.status_code >= 400:
        await pump.aclose()
        return queue_routes._result_response(first.result)
    return AbortableStream(_sse(first, pump, service, record), media_type="text/event-stream", headers=SSE_HEADERS)


async def _first(pump: AsyncGenerator[Event, None]) -> Event | None:
    """The first event, or a KeepAlive once the request has been quiet (queued, or
    loading its model) for a keep-alive interval: the response then starts, so that
    clients' read timeouts (fal-client's is 120 s) never fire on a long queue."""
    return await anext(pump, None)


async def _sse(first: Event, pump: AsyncGenerator[Event, None], service: QueueService, record: RequestRecord) -> AsyncIterator[str]:
    """The events as SSE; the run is cancelled unless its final event was sent."""
    finished = False
    try:
        event: Event | None = first
        while event is not None:
            if isinstance(event, KeepAlive):
                yield ": keep-alive\n\n"
            elif isinstance(event, Partial):
                yield f"data: {json.dumps(event.body)}\n\n"
            else:
                finished = True
                if event.result.status_code >= 400:
                    yield f"event: error\ndata: {json.dumps(event.result.body)}\n\n"
                    raise StreamFailed(f"request {record.id} failed with {event.result.status_code} after streaming began")
                yield f"data: {json.dumps(event.result.body)}\n\n"
                return
            event = await anext(pump, None)
    finally:
        with anyio.CancelScope(shield=True):
            await pump.aclose()
            if not finished:
                await service.abandon(record)


async def _follow(service: QueueService, record: RequestRecord, key: ApiKey | None, *, images: bool) -> AsyncIterator[Event]:
    """One Partial per change of progress or preview, keep-alives on quiet ticks, then
    the Final result."""
    keepalive = service.settings.sse_keepalive_seconds
    sent = time.monotonic()
    last: tuple[int | None, str | None] | None = None
    async for view in service.follow(record.app, record.id, key, with_logs=False):
        if time.monotonic() - sent >= keepalive:
            sent = time.monotonic()
            yield KeepAlive()
        if view is None:
            continue
        current = view.record
        if current.status is Status.COMPLETED:
            yield Final(await service.result(current.app, current.id, key))
            return
        if current.status is not Status.IN_PROGRESS or not current.progress_total:
            continue
        mark = (current.progress_step, current.preview_url)
        if mark == last:
            continue
        last, sent = mark, time.monotonic()
        yield Partial(_partial(current, images=images))


def _partial(record: RequestRecord, *, images: bool) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if images:
        body["images"] = [{"url": record.preview_url, "content_type": "image/jpeg"}] if record.preview_url else []
    body["progress"] = {"step": record.progress_step, "total": record.progress_total}
    return body


async def _until_disconnected(request: Request, events: AsyncIterator[Event]) -> AsyncGenerator[Event, None]:
    """``events`` until they end or the client hangs up (then this ends early). Watches
    ``receive`` itself: under ASGI 2.4 servers Starlette notices a hang-up only when a
    write fails, which for a quiet run could be a keep-alive interval later."""
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        while True:
            step = asyncio.ensure_future(anext(events))
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                return
            try:
                event = step.result()
            except StopAsyncIteration:
                return
            yield event
    finally:
        gone.cancel()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        continue
