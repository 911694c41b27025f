"""fal's storage access API under ``/v1/storage``: a file's ACL (``GET/PUT
/v1/storage/files/acl?url=``), signed URLs (``POST /v1/storage/files/sign?url=``, at
most 7 days), a key's storage defaults (``GET/PUT /v1/storage/settings``); and the check
``GET /files/{key}`` makes before serving a file (``openfal.media.access`` decides)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from openfal.errors import ClientError, Forbidden, RequestNotFound, Unauthorized
from openfal.http.deps import base_url, current_key, json_body, runtime
from openfal.media.access import MAX_SIGNED_SECONDS, SIGNATURE, Acl, decide, parse_acl, signed_url
from openfal.media.retention import MediaLifecycle
from openfal.models import ApiKey
from openfal.platform_api import access
from openfal.validation import parse_body

router = APIRouter(prefix="/v1/storage", tags=["storage"])


class FileForbidden(ClientError):
    """You may not read this file."""

    status_code = 403


class FileNotFound(ClientError):
    """File not found."""

    status_code = 404


async def check_file(request: Request, media_key: str) -> bool:
    """Raise unless the caller may read the file; True when it is public (cacheable by
    anyone), False when access was decided for this caller (not to be cached)."""
    rt = runtime(request)
    found = await rt.media_index.access(media_key)
    if found is None or found[1] is None:
        return True
    owner, acl = found
    signature = request.query_params.get(SIGNATURE)
    if signature is not None and rt.uploads is not None and rt.uploads.signed_file(media_key, signature):
        return False
    caller = None
    if request.headers.get("authorization"):
        try:
            caller = await rt.auth.authenticate(request.headers.get("authorization"))
        except Unauthorized:
            caller = None
    verdict = decide(acl, owner, caller)
    if verdict == "hide":
        raise FileNotFound()
    if verdict == "forbid":
        raise FileForbidden()
    return False


async def _owned_file(request: Request, url: str, caller: ApiKey | None) -> tuple[str, str | None, dict[str, Any] | None]:
    """(media key, owner, ACL) of a file of this server the caller owns (or admin)."""
    rt = runtime(request)
    media_key = rt.media.key_of(url)
    found = await rt.media_index.access(media_key) if media_key else None
    if media_key is None or found is None:
        raise RequestNotFound("No file of this server has that URL")
    owner, acl = found
    if not access.may_read_owned(caller, owner):
        # another key's file: as absent as a hidden one
        raise RequestNotFound("No file of this server has that URL")
    return media_key, owner, acl


Url = Query(..., min_length=1, max_length=4096, description="the file's URL")


@router.get("/files/acl", summary="A file's ACL")
async def get_acl(request: Request, url: str = Url, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    _, owner, acl = await _owned_file(request, url, caller)
    return {"url": url, "owner": owner, **(acl or Acl().model_dump())}


@router.put("/files/acl", summary="Set a file's ACL: {default: allow|forbid|hide, rules: [{user, decision}]}")
async def put_acl(request: Request, url: str = Url, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    media_key, owner, _ = await _owned_file(request, url, caller)
    acl = parse_acl(await json_body(request))
    await runtime(request).media_index.set_acl(media_key, acl)
    return {"url": url, "owner": owner, **acl}


class SignIn(BaseModel):
    expiration_seconds: int = Field(3600, ge=1, le=MAX_SIGNED_SECONDS)


@router.post("/files/sign", summary="A URL that opens the file to anyone until it expires (at most 7 days)")
async def sign(request: Request, url: str = Url, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    media_key, _, _ = await _owned_file(request, url, caller)
    body = parse_body(SignIn, await json_body(request))
    expires = time.time() + body.expiration_seconds
    signer = runtime(request).uploads
    assert signer is not None
    # the ACL is checked where openfal serves the file
    return {"signed_url": signed_url(base_url(request), media_key, signer.file_signature(media_key, expires)), "expires_at": expires}


class StorageSettings(BaseModel):
    """fal's account storage defaults: what a key's new files get when a request or an
    upload names no ``X-Fal-Object-Lifecycle-Preference``."""

    expiration_duration_seconds: float | None = Field(None, gt=0, le=1e10, description="null: kept for good")
    initial_acl: Acl | None = None


def _settings_json(lifecycle: MediaLifecycle, default_ttl: float) -> dict[str, Any]:
    seconds = None if lifecycle.keep_forever else (lifecycle.ttl or default_ttl)
    return {"expiration_duration_seconds": seconds, "initial_acl": lifecycle.acl}


@router.get("/settings", summary="The caller's storage defaults")
async def get_settings(request: Request, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    rt = runtime(request)
    defaults = await rt.media_index.defaults(caller.id if caller else None)
    return _settings_json(defaults, rt.settings.media_ttl_seconds)


@router.put("/settings", summary="Set the caller's storage defaults")
async def put_settings(request: Request, caller: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    if caller is None:
        raise Forbidden("Storage settings belong to a key: this server runs with authentication off")
    raw = await json_body(request)
    body = parse_body(StorageSettings, raw)
    forever = isinstance(raw, dict) and "expiration_duration_seconds" in raw and raw["expiration_duration_seconds"] is None
    lifecycle = MediaLifecycle(
        ttl=body.expiration_duration_seconds, keep_forever=forever, acl=body.initial_acl.model_dump() if body.initial_acl else None
    )
    rt = runtime(request)
    await rt.media_index.set_defaults(caller.id, lifecycle)
    return _settings_json(lifecycle, rt.settings.media_ttl_seconds)
