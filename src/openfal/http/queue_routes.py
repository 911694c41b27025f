"""fal's queue routes. Each one parses the wire format, calls one service method and
formats the answer; catch-alls because endpoint ids have any number of segments."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from openfal.endpoints.ids import normalize_endpoint, parse_request_path
from openfal.errors import RequestNotFound, UnknownEndpoint
from openfal.http.deps import base_url, current_key, json_body, runtime
from openfal.http.errors import error_response
from openfal.http.wire import status_body, submit_body, submit_options
from openfal.models import ApiKey, RequestRecord
from openfal.runtime import Runtime
from openfal.service import Result, Submitted

router = APIRouter()

TRUE = {"1", "true", "yes", "on"}
CANCEL_CODES = {"CANCELLATION_REQUESTED": 202, "ALREADY_COMPLETED": 400}


async def _submit(request: Request, path: str, key: ApiKey | None, *, body: Any = None) -> Submitted:
    endpoint_id = normalize_endpoint(path)
    if endpoint_id is None:
        raise UnknownEndpoint(f"Path /{path} not found")
    if body is None:
        body = await json_body(request)
    options = submit_options(request.headers, request.query_params)
    submitted = await runtime(request).service.submit(endpoint_id, body, key=key, base_url=base_url(request), options=options)
    request.state.fal_request_id = submitted.record.id
    return submitted


def query_input(request: Request) -> dict[str, Any]:
    """A GET run's input: its query parameters (fal-client >= 1.0.2 sends no body with
    ``run(method="GET")``; the JS client puts a GET's input in the query). Values are
    strings, which the endpoint's schema coerces; a repeated name is a list."""
    params = request.query_params
    return {name: (values if len(values := params.getlist(name)) > 1 else values[0]) for name in params}


@router.post("/run/{path:path}", tags=["queue"], summary="Run synchronously (fal.run)")
async def run_sync(path: str, request: Request, key: ApiKey | None = Depends(current_key)) -> Response:
    body = query_input(request) if request.method == "GET" else None
    record = (await _submit(request, path, key, body=body)).record
    result = await wait_or_abandon(request, record)
    return Response(status_code=499) if result is None else _result_response(result)


async def wait_or_abandon(request: Request, record: RequestRecord) -> Result | None:
    """The request's result, or None once the caller has hung up (the request is then
    cancelled, as fal does for a dropped synchronous call)."""
    service = runtime(request).service
    waiter = asyncio.ensure_future(service.wait(record))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not waiter.done():
        waiter.cancel()
        await service.abandon(record)
        return None
    return waiter.result()


@router.get("/run/{path:path}", tags=["queue"], summary="Run synchronously with GET (input from the query)")
async def run_sync_get(path: str, request: Request, key: ApiKey | None = Depends(current_key)) -> Response:
    return await run_sync(path, request, key)


@router.api_route("/run/{path:path}", methods=["PUT", "DELETE", "PATCH"], include_in_schema=False)
async def run_other_methods(path: str) -> Response:
    return _not_allowed("GET, POST")


def _not_allowed(allow: str) -> JSONResponse:
    return error_response({"detail": "Method Not Allowed"}, 405, {"Allow": allow})


async def _disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.5)


@router.post("/{path:path}", tags=["queue"], summary="Submit a request to an endpoint")
async def submit(path: str, request: Request, key: ApiKey | None = Depends(current_key)) -> Response:
    if request.url.hostname in runtime(request).settings.run_hosts:
        return await run_sync(path, request, key)
    submitted = await _submit(request, path, key)
    headers = {"Idempotent-Replayed": "true"} if submitted.replayed else None
    return JSONResponse(submit_body(submitted.record, submitted.queue_position), headers=headers)


@router.get("/{path:path}", tags=["queue"], summary="Status, status stream or result of a request")
async def read(path: str, request: Request, logs: str | None = None, key: ApiKey | None = Depends(current_key)) -> Response:
    target = parse_request_path(path)
    if target is None and request.url.hostname in runtime(request).settings.run_hosts:
        return await run_sync(path, request, key)
    if target is None:
        if normalize_endpoint(path) is not None:  # an endpoint: it takes POST
            return _not_allowed("POST")
        return error_response({"detail": f"Path /{path} not found"}, 404)
    request.state.fal_request_id = target.request_id
    service = runtime(request).service
    with_logs = (logs or "").lower() in TRUE
    if target.action == "status":  # usually answered ahead of the router (http/hot_routes.py), by the same function
        return await status_response(runtime(request), target.app, target.request_id, key, with_logs=with_logs)
    if target.action == "stream":
        await service.get(target.app, target.request_id, key)
        return StreamingResponse(
            _sse(request, target.app, target.request_id, key, with_logs),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    if target.action == "result":
        return _result_response(await service.result(target.app, target.request_id, key))
    return error_response({"detail": "Use PUT to cancel"}, 405, {"Allow": "PUT"})


async def status_response(rt: Runtime, app: str, request_id: str, key: ApiKey | None, *, with_logs: bool) -> Response:
    """A request's status: 202 while it is queued or running, 200 once COMPLETED."""
    code, body = status_body(await rt.service.status(app, request_id, key, with_logs=with_logs))
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return Response(content, status_code=code, media_type="application/json")


@router.put("/{path:path}", tags=["queue"], summary="Cancel a request")
async def cancel(path: str, request: Request, key: ApiKey | None = Depends(current_key)) -> Response:
    target = parse_request_path(path)
    if target is None and normalize_endpoint(path) is not None:
        return _not_allowed("POST")
    if target is not None and target.action != "cancel":
        return _not_allowed("GET")
    if target is None:
        return error_response({"detail": f"Path /{path} not found"}, 404)
    request.state.fal_request_id = target.request_id
    try:
        outcome = await runtime(request).service.cancel(target.app, target.request_id, key)
    except RequestNotFound:
        return error_response({"status": "NOT_FOUND"}, 404)
    if CANCEL_CODES[outcome] >= 400:
        return error_response({"status": outcome}, CANCEL_CODES[outcome])
    return JSONResponse({"status": outcome}, status_code=CANCEL_CODES[outcome])


def _result_response(result: Result) -> Response:
    if result.status_code >= 400:
        return error_response(result.body, result.status_code, result.headers)
    return JSONResponse(result.body, status_code=result.status_code, headers=result.headers)


async def _sse(request: Request, app: str, request_id: str, key: ApiKey | None, with_logs: bool) -> AsyncIterator[str]:
    """``data:`` per change, a comment every keep-alive interval, closed after COMPLETED."""
    keepalive = runtime(request).settings.sse_keepalive_seconds
    last_sent = time.monotonic()
    async for view in runtime(request).service.follow(app, request_id, key, with_logs=with_logs):
        if view is None:
            if time.monotonic() - last_sent >= keepalive:
                last_sent = time.monotonic()
                yield ": keep-alive\n\n"
            continue
        _, body = status_body(view)
        last_sent = time.monotonic()
        yield f"data: {json.dumps(body)}\n\n"
