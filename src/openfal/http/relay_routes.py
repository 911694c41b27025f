"""Upstream webhooks for relayed requests: ``POST /api/relay/webhook/{token}``.

An upstream configured with ``"webhook": true`` is asked to call this when a relayed
request completes. The call only wakes the follower early; it then reads the status
and result from the upstream with its own key, so the webhook body is never trusted.
The token (``upstream.request_id.hmac``) is checked by the relay backend that made it;
a token this process did not make, or a request it no longer follows, is acknowledged
and ignored (polling finds the outcome anyway)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from openfal.http.deps import runtime

router = APIRouter()


@router.post("/api/relay/webhook/{token}", tags=["relay"], summary="Upstream completion webhook (wakes the relay)")
async def relay_webhook(token: str, request: Request) -> JSONResponse:
    name = token.split(".", 1)[0]
    backend = runtime(request).backends.get(name)
    woken = backend is not None and backend.wake(token)
    return JSONResponse({"woken": woken}, status_code=200)
