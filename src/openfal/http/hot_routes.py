"""The two calls every fal client makes for every request, answered as pure ASGI ahead
of FastAPI's router: the submit (``POST {endpoint id}``) and the polled status
(``GET {app}/requests/{id}/status``).

fal's clients poll the status about ten times a second for every pending request, and
every request starts with a submit. FastAPI matches ~50 routes (each through its
included-router wrapper, twice: once to match, once to handle) and solves dependencies
before either handler runs, which cost more CPU than the submit's own work and several
times the status answer (usually served from the store's views, no database round
trip). So both are matched here: the status by its shape, the submit as the POST that
no route listed before the queue's submit catch-all would take (the same routes'
own patterns decide, so a route added ahead of it keeps its paths). The handlers are
the queue routes' own functions; errors go through the one table in ``http/errors.py``
and ``x-fal-request-id`` comes from the middleware around this one. Everything else
goes on to the router, which documents both routes for OpenAPI."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Sequence
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from openfal.endpoints.ids import parse_request_path
from openfal.http import queue_routes
from openfal.http.deps import current_key
from openfal.http.errors import HANDLERS
from openfal.runtime import Runtime


class HotRoutes:
    def __init__(self, app: ASGIApp, *, routers: Sequence[APIRouter]) -> None:
        self.app = app
        self.ahead_of_submit = _posts_ahead_of_submit(routers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if method == "POST" and self.takes_submit(path):
            await _answer(scope, receive, send, _submit(scope, receive, path))
            return
        target = None
        if method in {"GET", "HEAD"} and path.endswith(("/status", "/status/")):
            target = parse_request_path(path)
        if target is None or target.action != "status":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})["fal_request_id"] = target.request_id
        await _answer(scope, receive, send, _status(scope, target.app, target.request_id))

    def takes_submit(self, path: str) -> bool:
        """Whether a POST of ``path`` is a submit: no route ahead of the submit takes it."""
        return not any(pattern.match(path) for pattern in self.ahead_of_submit)


def _posts_ahead_of_submit(routers: Sequence[APIRouter]) -> list[re.Pattern[str]]:
    """The path patterns of the POST routes the router tries before the queue's submit
    catch-all (``routers`` in the order the app includes them)."""
    patterns: list[re.Pattern[str]] = []
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or "POST" not in (route.methods or ()):
                continue
            if route.endpoint is queue_routes.submit:
                return patterns
            patterns.append(route.path_regex)
    raise ValueError("the queue's submit route is not among the routers")


async def _answer(scope: Scope, receive: Receive, send: Send, answering: Awaitable[Response]) -> None:
    try:
        response = await answering
    except Exception as exc:
        handler = _handler(exc)
        if handler is None:
            raise
        response = handler(Request(scope, receive), exc)
    await response(scope, receive, send)


async def _submit(scope: Scope, receive: Receive, path: str) -> Response:
    request = Request(scope, receive)
    return await queue_routes.submit(path.removeprefix("/"), request, await current_key(request))


async def _status(scope: Scope, app: str, request_id: str) -> Response:
    runtime: Runtime = scope["app"].state.runtime
    key = await runtime.auth.authenticate(_header(scope, b"authorization"))
    logs = dict(parse_qsl(scope["query_string"].decode("latin-1"))).get("logs", "") if scope["query_string"] else ""
    return await queue_routes.status_response(runtime, app, request_id, key, with_logs=logs.lower() in queue_routes.TRUE)


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
