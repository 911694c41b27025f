"""``GET {app}/requests/{id}/status`` as a pure ASGI endpoint, ahead of FastAPI's router.

fal's clients poll this about ten times a second for every pending request, so it is
the load an API process carries. Matching ~60 routes and solving dependencies cost
FastAPI several times what the answer itself costs (with the store's views, usually
no database round trip at all), so this one route is matched by hand and answered
here; everything else goes on to the router. The answer is the one the API gives
everywhere: the service's status view in fal's shape (``wire.status_body``), errors
through the one table in ``http/errors.py``, ``x-fal-request-id`` from the middleware
around it. The queue router documents the route for OpenAPI."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openfal.endpoints.ids import parse_request_path
from openfal.http.errors import HANDLERS
from openfal.http.wire import status_body
from openfal.runtime import Runtime

TRUE = {"1", "true", "yes", "on"}


class StatusEndpoint:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = None
        if scope["type"] == "http" and scope["method"] in {"GET", "HEAD"} and scope["path"].endswith(("/status", "/status/")):
            target = parse_request_path(scope["path"])
        if target is None or target.action != "status":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["fal_request_id"] = target.request_id
        try:
            response = await _status(scope, target.app, target.request_id)
        except Exception as exc:
            handler = _handler(exc)
            if handler is None:
                raise
            response = handler(Request(scope, receive), exc)
        await response(scope, receive, send)


async def _status(scope: Scope, app: str, request_id: str) -> Response:
    runtime: Runtime = scope["app"].state.runtime
    key = await runtime.auth.authenticate(_header(scope, b"authorization"))
    logs = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("logs", "") if scope["query_string"] else ""
    view = await runtime.service.status(app, request_id, key, with_logs=logs.lower() in TRUE)
    code, body = status_body(view)
    return Response(_dumps(body), status_code=code, media_type="application/json")


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _handler(exc: Exception) -> Any:
    """The error handler FastAPI would pick: the nearest class in the exception's MRO."""
    for cls in type(exc).__mro__:
        if cls in HANDLERS:
            return HANDLERS[cls]
    return None
