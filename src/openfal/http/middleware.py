"""``x-fal-request-id`` on every response: the request's id where there is one (set by
the route in ``scope["state"]``), else a fresh one. Python's fal client treats a 5xx
that carries it as a real answer and does not retry."""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openfal.http.errors import internal_error

HEADER = b"x-fal-request-id"
log = logging.getLogger("openfal.http")
#: what may be echoed in the header: printable ASCII (request ids are UUIDs)
_HEADER_SAFE = re.compile(r"[\x21-\x7e]{1,128}")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                request_id = state.get("fal_request_id")
                if not request_id or not _HEADER_SAFE.fullmatch(request_id):
                    request_id = str(uuid.uuid4())  # never copy a control character into a header
                headers.append((HEADER, request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # fal's shape for an unexpected error, still carrying the request id
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            await internal_error()(scope, receive, send_with_id)
