"""fal's storage API, so file inputs work with unchanged clients (fal-queue-api.md
1.13): the Python client's CDN token + ``/files/upload`` and its ``initiate`` fallback,
and the JS client's ``initiate`` + raw PUT. Files land in openfal's media store and
their URLs are openfal media URLs, usable as ``image_url``.

Multipart uploads (fal's clients use them above 90-100 MB) are not implemented: those
requests answer 413, as does anything over ``max_upload_bytes``."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from openfal.auth import parse_authorization
from openfal.backends.base import MediaBlob
from openfal.errors import BadRequest, PayloadTooLarge, Unauthorized
from openfal.http.deps import base_url, current_key, json_body, read_body, runtime
from openfal.media.keys import new_key
from openfal.models import ApiKey
from openfal.uploads import TOKEN_PREFIX, Ticket

router = APIRouter(tags=["storage"])

DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _signer(request: Request) -> Any:
    signer = runtime(request).uploads
    assert signer is not None
    return signer


async def _uploader(request: Request) -> str | None:
    """The key id behind a CDN token or an API key (the Python client sends the token)."""
    token = parse_authorization(request.headers.get("authorization"))
    if token and token.startswith(TOKEN_PREFIX):
        valid, key_id = _signer(request).token_key(token)
        if not valid:
            raise Unauthorized("Invalid or expired upload token")
        return key_id
    key = await current_key(request)
    return key.id if key else None


def _lifecycle(request: Request) -> tuple[float | None, bool]:
    """(ttl, keep forever) from X-Fal-Object-Lifecycle(-Preference)."""
    raw = request.headers.get("x-fal-object-lifecycle") or request.headers.get("x-fal-object-lifecycle-preference")
    if not raw:
        return None, False
    try:
        value = json.loads(raw).get("expiration_duration_seconds", "absent")
    except (ValueError, AttributeError):
        raise BadRequest("X-Fal-Object-Lifecycle must be a JSON object") from None
    if value is None:
        return None, True
    if isinstance(value, int | float) and value > 0:
        return float(value), False
    return None, False


async def _store(request: Request, key: str, content_type: str, data: bytes) -> str:
    rt = runtime(request)
    ttl, forever = _lifecycle(request)
    await rt.media.put(MediaBlob(data, content_type), key)
    await rt.media_index.add(key, len(data), ttl=ttl, keep_forever=forever)
    return rt.media.url(key, base_url(request))


@router.post("/storage/auth/token")
async def cdn_token(request: Request, key: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    token, expires = _signer(request).token(key.id if key else None)
    return {
        "token": token,
        "token_type": "Bearer",
        "base_url": base_url(request),
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
    }


@router.post("/files/upload")
async def upload(request: Request) -> dict[str, Any]:
    await _uploader(request)
    data = await read_body(request, runtime(request).settings.max_upload_bytes)
    content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
    key = new_key(content_type, request.headers.get("x-fal-file-name"))
    return {"access_url": await _store(request, key, content_type, data)}


@router.post("/files/upload/multipart")
@router.post("/storage/upload/initiate-multipart")
async def multipart_not_supported() -> None:
    raise PayloadTooLarge("Multipart uploads are not supported by this server; files up to the upload limit go in one request")


@router.post("/storage/upload/initiate")
async def initiate(request: Request, key: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    body = await json_body(request)
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object")
    content_type = str(body.get("content_type") or DEFAULT_CONTENT_TYPE)
    media_key = new_key(content_type, body.get("file_name"))
    ticket = _signer(request).ticket(Ticket(media_key=media_key, content_type=content_type, key_id=key.id if key else None))
    return {
        "upload_url": f"{base_url(request)}/storage/upload/put/{ticket}",
        "file_url": runtime(request).media.url(media_key, base_url(request)),
    }


@router.put("/storage/upload/put/{ticket}")
async def put_upload(ticket: str, request: Request) -> JSONResponse:
    opened = _signer(request).open_ticket(ticket)
    if opened is None:
        raise Unauthorized("Invalid or expired upload URL")
    data = await read_body(request, runtime(request).settings.max_upload_bytes)
    content_type = request.headers.get("content-type") or opened.content_type
    await _store(request, opened.media_key, content_type, data)
    return JSONResponse({}, status_code=200)
