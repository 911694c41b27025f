"""Proxy mode: the protocol of ``@fal-ai/server-proxy``, so the JS client's
``createFalClient({proxyUrl: {url: "https://openfal/fal/proxy", when: "always"}})``
works with no request middleware.

In proxy mode the client sends every call to one URL, with the URL it meant in the
``x-fal-target-url`` header. openfal serves such a call itself: the target's path and
query are dispatched to openfal's own routes, as if the client had called them (fal's
queue host to the queue routes, ``fal.run`` to ``/run``, ``rest.fal.ai`` to the storage
and token routes). Nothing is ever fetched from the target: a target on any other host
is refused (412, as the server proxy does), so this is never an open proxy. The caller
authenticates with its own openfal key in ``Authorization``, as on every route."""

from __future__ import annotations

import json
from urllib.parse import unquote, urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

#: where the proxy listens: openfal's own, and server-proxy's Next.js default route
PROXY_PATHS = frozenset({"/fal/proxy", "/api/fal/proxy"})
TARGET_HEADER = b"x-fal-target-url"
#: fal's hosts the clients target, and the prefix of openfal's route serving each
FAL_HOSTS = {
    "queue.fal.run": "",
    "fal.run": "/run",
    "rest.fal.ai": "",
    "queue.falrun.com": "",
    "falrun.com": "/run",
}


class FalProxyMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") not in PROXY_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        target = headers.get(TARGET_HEADER)
        if target is None:
            await _answer(send, 400, "Missing the x-fal-target-url header")
            return
        path = _route_for(target.decode("latin-1"), headers.get(b"host", b"").decode("latin-1"))
        if path is None:
            await _answer(send, 412, "Invalid x-fal-target-url header: only fal's and this server's URLs are served")
            return
        raw_path, _, query = path.partition("?")
        scope = {
            **scope,
            "path": unquote(raw_path),
            "raw_path": raw_path.encode("latin-1"),
            "query_string": query.encode("latin-1"),
            "headers": [(k, v) for k, v in scope.get("headers") or [] if k != TARGET_HEADER],
        }
        await self.app(scope, receive, send)


def _route_for(target: str, own_host: str) -> str | None:
    """openfal's path (with query) serving ``target``, or None when it is not ours to serve."""
    try:
        parts = urlsplit(target)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in {"http", "https"}:
        return None
    if host in FAL_HOSTS and port is None:
        prefix = FAL_HOSTS[host]
    elif parts.netloc.lower() == own_host.lower() and own_host:
        prefix = ""
    else:
        return None
    path = prefix + (parts.path or "/")
    if path.rstrip("/") in PROXY_PATHS:
        return None  # never the proxy again
    return f"{path}?{parts.query}" if parts.query else path


async def _answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
