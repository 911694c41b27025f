"""What every HTTP request must pass before a route reads anything of it, so each new
route inherits the bounds instead of having to remember them:

* no NUL in its path or query (nothing openfal stores can hold one), checked on the
  path a proxy-mode call was rewritten to as well (this runs inside proxy mode);
* an admin route's caller is an admin before its body is read: an anonymous body is
  answered 401 without a byte of it read;
* a body bound: a declared ``Content-Length`` past the route's limit is refused before
  reading, and a body without one (chunked) is counted as it streams and refused the
  moment it passes the limit, whatever the route does with it (a JSON parse, a
  multipart spool to the temp disk, FastAPI's own body model).

Starlette's ``RequestBodyLimitMiddleware`` counts the same way, but answers in plain
text and, set per route, does not reach the submit and status calls answered ahead of
the router (``hot_routes.py``); this answers in fal's shape, by path.
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openfal.config import Settings
from openfal.errors import ClientError, Forbidden, PayloadTooLarge
from openfal.http.errors import client_error, error_response

#: the admin API: small JSON bodies (a key's name and limits), only from admin keys
ADMIN_PREFIX = "/api/admin/"
ADMIN_BODY_BYTES = 64 * 1024
#: fal's storage uploads: one file (or one part of a multipart upload) per request
UPLOAD_PATH = re.compile(r"/(files/upload|storage/upload/put/.+|storage/upload/multipart/.+|files/.+/multipart/[^/]+/\d+)/?")


def body_limit(path: str, settings: Settings) -> int:
    """The most bytes a request body to ``path`` may have."""
    if path.startswith(ADMIN_PREFIX):
        return ADMIN_BODY_BYTES
    if UPLOAD_PATH.fullmatch(path):
        return settings.max_upload_bytes
    return settings.max_body_bytes


def refuse_nul(scope: Scope) -> Response | None:
    """A NUL in the path or query can name nothing openfal stores (PostgreSQL refuses it
    in text): answered here, in fal's shape, before any route or the database sees it."""
    if "\x00" in scope.get("path", ""):
        return error_response({"detail": "Path not found"}, 404)
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        detail = [{"loc": ["query"], "msg": "Query parameters must not contain NUL (%00) characters", "type": "value_error"}]
        return error_response({"detail": detail}, 422)
    return None


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = refuse_nul(scope)
        if refusal is None and scope["path"].startswith(ADMIN_PREFIX):
            refusal = await _admin_refusal(scope)
        runtime = scope["app"].state.runtime
        limit = body_limit(scope["path"], runtime.settings)
        declared = Headers(scope=scope).get("content-length")
        if refusal is None and declared is not None and declared.strip().isdigit() and int(declared) > limit:
            refusal = client_error(PayloadTooLarge(f"Request body larger than {limit} bytes"), scope["path"])
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await _Bounded(limit, scope, receive, send).run(self.app)


async def _admin_refusal(scope: Scope) -> Response | None:
    """401 or 403 for a caller of the admin API that is not an admin, before its body
    is read (the routes check again: this is the door, they are the rooms)."""
    auth = scope["app"].state.runtime.auth
    try:
        key = await auth.authenticate(Headers(scope=scope).get("authorization"))
        if key is not None and not key.is_admin:
            raise Forbidden()
    except ClientError as exc:
        return client_error(exc, scope["path"])
    return None


class _Bounded:
    """A body counted as it streams. Past the limit, receiving raises PayloadTooLarge,
    and whatever the route then answers, unless it answered 413 itself (in its own
    shape: the OpenAI routes), becomes fal's 413."""

    def __init__(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit = limit
        self.scope = scope
        self._receive = receive
        self._send = send
        self.size = 0
        self.exceeded = False
        self.started = False
        self.replaced = False

    async def run(self, app: ASGIApp) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            if not self.exceeded or self.started:
                raise
            await self._too_large()

    async def receive(self) -> Message:
        if self.exceeded:
            raise self._exception()
        message = await self._receive()
        if message["type"] == "http.request":
            self.size += len(message.get("body", b""))
            if self.size > self.limit:
                self.exceeded = True
                raise self._exception()
        return message

    async def send(self, message: Message) -> None:
        if self.replaced:
            return  # the route's own answer, after the 413 that replaced it
        if message["type"] == "http.response.start":
            self.started = True
            if self.exceeded and message["status"] != 413:
                self.replaced = True
                await self._too_large()
                return
        await self._send(message)

    def _exception(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body larger than {self.limit} bytes")

    async def _too_large(self) -> None:
        self.started = True
        await client_error(self._exception(), self.scope["path"])(self.scope, self._receive, self._send)
