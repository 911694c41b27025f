"""Who is calling: the one place a call's credentials become its API key.

A call carries one of three credentials, each checked by its own issuer:
- ``Authorization: Key|Bearer <api key>`` (auth.Authenticator, cached briefly);
- ``?fal_jwt_token=`` from ``POST /tokens/`` on the calls fal's clients make with one
  instead of a key (realtime sockets, and client-mode streams in browsers): the token
  names its key and the apps it covers (realtime.RealtimeTokens);
- ``Authorization: Bearer oftok.…``, the CDN token the Python client uploads with
  (uploads.UploadSigner).

Every route asks here, so "the key is revoked or expired" and "auth is off" mean the same
for all three (HTTP requests and WebSockets alike: both are ``HTTPConnection``s)."""

from __future__ import annotations

import time

from starlette.requests import HTTPConnection

from openfal import realtime
from openfal.auth import parse_authorization
from openfal.endpoints.ids import app_of
from openfal.errors import Unauthorized
from openfal.models import ApiKey
from openfal.runtime import Runtime
from openfal.uploads import TOKEN_PREFIX, UploadSigner

#: the query parameter fal's clients send a ``/tokens/`` token in
TOKEN_PARAM = "fal_jwt_token"


def _runtime(conn: HTTPConnection) -> Runtime:
    return conn.app.state.runtime


def signer(rt: Runtime) -> UploadSigner:
    """The runtime's signer of upload credentials (made when it starts)."""
    assert rt.uploads is not None, "the runtime is not started"
    return rt.uploads


def realtime_tokens(rt: Runtime) -> realtime.RealtimeTokens:
    """``/tokens/`` tokens, signed with the same server secret as upload credentials."""
    return realtime.RealtimeTokens(signer(rt).secret)


async def current_key(conn: HTTPConnection) -> ApiKey | None:
    """The key in the Authorization header; None when auth is off; else ``Unauthorized``."""
    return await _runtime(conn).auth.authenticate(conn.headers.get("authorization"))


async def key_or_token(conn: HTTPConnection, endpoint_id: str | None) -> ApiKey | None:
    """The caller of a call fal's clients may make with a ``/tokens/`` token instead of a
    key: the token's key when the call carries ``?fal_jwt_token=`` and no Authorization
    header (the token must cover ``endpoint_id``'s app), else ``current_key``."""
    token = conn.query_params.get(TOKEN_PARAM)
    if token is None or conn.headers.get("authorization") or endpoint_id is None:
        return await current_key(conn)
    return await token_key(_runtime(conn), token, endpoint_id)


async def token_key(rt: Runtime, token: str, endpoint_id: str) -> ApiKey | None:
    """The key a ``/tokens/`` token stands for, if it covers the endpoint's app and its
    key is still active; else ``Unauthorized``."""
    claims = realtime_tokens(rt).open(token)
    if claims is None or not claims.allows(app_of(endpoint_id)):
        raise Unauthorized("Invalid, expired or foreign realtime token")
    key = await rt.keys.get(claims.key_id) if claims.key_id else None
    if claims.key_id and (key is None or not key.active or key.expired(time.time())):
        raise Unauthorized("The key behind this token is revoked or expired")
    if key is None and rt.settings.auth_enabled:
        raise Unauthorized("This token names no key")
    return key


async def uploader(conn: HTTPConnection) -> str | None:
    """The key id behind an upload: a CDN token (the Python client's) or an API key."""
    token = parse_authorization(conn.headers.get("authorization"))
    if token and token.startswith(TOKEN_PREFIX):
        valid, key_id = signer(_runtime(conn)).token_key(token)
        if not valid:
            raise Unauthorized("Invalid or expired upload token")
        return key_id
    key = await current_key(conn)
    return key.id if key else None
