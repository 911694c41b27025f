"""Realtime: ``POST /tokens/`` (fal's REST host) and the ``/{endpoint}/realtime``
WebSocket (also under ``/run/``, for clients whose run host is ``host/run``).

Each message on the socket is one request on the queue (billed, scoped, in the
history like any other) whose output comes back as one msgpack frame, in order. At
most ``max_buffering`` messages (1-60, default 1), and ``MAX_BUFFERED_BYTES`` of them,
wait on a connection; past that the server stops reading, so a fast sender is slowed
down rather than losing messages (or filling the server's memory).
Closing the socket cancels what is still running. Authentication: ``?fal_jwt_token=``
from ``/tokens/`` (both clients' default), or ``Authorization: Key|Bearer`` on the
handshake (fal-client's ``use_jwt=False``). A refused handshake is an HTTP 403."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import anyio
from fastapi import APIRouter, Depends, Request, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from openfal import realtime
from openfal.endpoints.ids import normalize_endpoint
from openfal.errors import InputInvalid, OpenfalError, Unauthorized
from openfal.http.credentials import key_or_token, realtime_tokens
from openfal.http.deps import current_key, json_body, runtime
from openfal.models import ApiKey, RequestRecord
from openfal.runtime import Runtime
from openfal.service import SubmitOptions
from openfal.validation import parse_body

router = APIRouter()
log = logging.getLogger("openfal.realtime")

#: policy violation: the close code for a refused handshake
REFUSED = 1008


@router.post("/tokens/", tags=["realtime"], summary="A short-lived token for realtime connections (fal's REST API)")
@router.post("/tokens", include_in_schema=False)
async def tokens(request: Request, key: ApiKey | None = Depends(current_key)) -> JSONResponse:
    """``{"allowed_apps": [alias], "token_expiration": seconds}`` -> the token, as a JSON string."""
    body = parse_body(realtime.TokenRequest, await json_body(request))
    token = realtime_tokens(runtime(request)).issue(key.id if key else None, body.allowed_apps, body.token_expiration)
    return JSONResponse(token)


# decorators register bottom-up and the router tries routes in that order: /run/ must be
# registered first, or the catch-all would take "run/..." as part of the endpoint id
@router.websocket("/{path:path}/realtime")
@router.websocket("/run/{path:path}/realtime")
async def realtime_socket(websocket: WebSocket, path: str) -> None:
    rt: Runtime = websocket.app.state.runtime
    endpoint_id = normalize_endpoint(path)
    try:
        if endpoint_id is None:
            raise Unauthorized(f"Path /{path}/realtime not found")
        buffering = realtime.parse_buffering(websocket.query_params.get("max_buffering"))
        key = await _authenticate(websocket, endpoint_id)
        rt.router.resolve(endpoint_id)
    except (OpenfalError, ValueError) as exc:
        log.info("realtime handshake for /%s refused: %s", path, exc)
        await websocket.close(code=REFUSED)
        return
    await websocket.accept()
    inbox = Inbox(buffering)
    runner = asyncio.ensure_future(_serve(rt, websocket, endpoint_id, key, inbox))
    try:
        await _read(websocket, inbox, runner)
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await runner


async def _authenticate(websocket: WebSocket, endpoint_id: str) -> ApiKey | None:
    key = await key_or_token(websocket, endpoint_id)
    if key is not None and not key.may_use(endpoint_id):
        raise Unauthorized(f"This API key may not use {endpoint_id}")
    return key


class Inbox:
    """The messages waiting on one socket, in order: at most ``count`` of them and
    ``realtime.MAX_BUFFERED_BYTES`` together (one larger than that may wait alone)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.size = 0
        self._items: deque[tuple[dict[str, Any] | str, int]] = deque()
        self._changed = asyncio.Event()

    def _full(self, size: int) -> bool:
        return bool(self._items) and (len(self._items) >= self.count or self.size + size > realtime.MAX_BUFFERED_BYTES)

    async def put(self, item: dict[str, Any] | str, size: int) -> None:
        """Wait until the message fits, then queue it."""
        while self._full(size):
            self._changed.clear()
            await self._changed.wait()
        self._items.append((item, size))
        self.size += size
        self._changed.set()

    async def get(self) -> dict[str, Any] | str:
        while not self._items:
            self._changed.clear()
            await self._changed.wait()
        item, size = self._items.popleft()
        self.size -= size
        self._changed.set()
        return item


async def _read(websocket: WebSocket, inbox: Inbox, runner: asyncio.Future[None]) -> None:
    """Frames into the inbox until the client leaves; ``put`` waits while the inbox is
    full, which is the backpressure (nothing more is read meanwhile). Undecodable
    frames are queued as their error so answers stay in message order."""
    while not runner.done():
        try:
            message = await websocket.receive()
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        size = realtime.frame_size(message)
        try:
            item: dict[str, Any] | str = realtime.decode_frame(message)
        except realtime.FrameError as exc:
            item = str(exc)
        del message  # what waits is the decoded input, not the frame too
        put = asyncio.ensure_future(inbox.put(item, size))
        await asyncio.wait({put, runner}, return_when=asyncio.FIRST_COMPLETED)
        if not put.done():
            put.cancel()
            return


async def _serve(rt: Runtime, websocket: WebSocket, endpoint_id: str, key: ApiKey | None, inbox: Inbox) -> None:
    base_url = rt.settings.public_base_url or str(websocket.base_url).replace("ws", "http", 1).rstrip("/")
    while True:
        item = await inbox.get()
        if isinstance(item, str):
            await websocket.send_text(realtime.error_frame("INVALID_MESSAGE", item))
            continue
        record: RequestRecord | None = None
        try:
            record = (await rt.service.submit(endpoint_id, item, key=key, base_url=base_url, options=SubmitOptions())).record
            result = await rt.service.wait(record)
        except InputInvalid as exc:
            await websocket.send_text(realtime.error_frame("VALIDATION_ERROR", _reason(exc.detail)))
            continue
        except OpenfalError as exc:
            await websocket.send_text(realtime.error_frame(getattr(exc, "error_type", None) or type(exc).__name__, exc.message))
            continue
        except asyncio.CancelledError:
            if record is not None:
                with anyio.CancelScope(shield=True):
                    await rt.service.abandon(record)
            raise
        if result.status_code >= 400:
            error = result.body.get("error_type") if isinstance(result.body, dict) else None
            await websocket.send_text(realtime.error_frame(error or f"HTTP_{result.status_code}", _reason(result.body)))
        else:
            await websocket.send_bytes(realtime.encode_result(result.body))


def _reason(body: Any) -> str:
    detail = body.get("detail") if isinstance(body, dict) else body
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        return f"{'.'.join(str(p) for p in first.get('loc', []))}: {first.get('msg')}"
    return str(detail)
