"""fal's storage API, so file inputs work with unchanged clients (fal-queue-api.md
1.13): the Python client's CDN token + ``/files/upload`` and its ``initiate`` fallback,
and the JS client's ``initiate`` + raw PUT, and both clients' multipart uploads (used
above 100 MB by Python, 90 MB by JS). Files land in openfal's media store and their
URLs are openfal media URLs, usable as ``image_url``.

A single request or part is bounded by ``max_upload_bytes``, a whole multipart file
by ``max_multipart_upload_bytes``; both answer 413 beyond. The part and completion
URLs are signed tickets, so any API node can take any part."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from openfal.errors import BadRequest, Unauthorized
from openfal.http.credentials import signer, uploader
from openfal.http.deps import base_url, current_key, json_body, read_body, runtime
from openfal.media.names import new_key
from openfal.media.retention import MediaLifecycle, parse_lifecycle
from openfal.models import ApiKey, MediaBlob
from openfal.uploads import Ticket, UploadSigner
from openfal.validation import parse_body

router = APIRouter(tags=["storage"])

DEFAULT_CONTENT_TYPE = "application/octet-stream"
#: S3's limit on parts per upload, kept for every store
MAX_PARTS = 10_000


def _signer(request: Request) -> UploadSigner:
    return signer(runtime(request))


def _lifecycle(request: Request) -> MediaLifecycle:
    return parse_lifecycle(request.headers.get("x-fal-object-lifecycle") or request.headers.get("x-fal-object-lifecycle-preference"))


async def _kept(request: Request, key_id: str | None, lifecycle: MediaLifecycle) -> MediaLifecycle:
    """The upload's preference, what it leaves open from the key's storage settings."""
    if key_id is None or not (lifecycle.keeps_default or lifecycle.acl is None):
        return lifecycle
    return lifecycle.over(await runtime(request).media_index.defaults(key_id))


async def _index(request: Request, media_key: str, size: int, key_id: str | None, lifecycle: MediaLifecycle) -> None:
    kept = await _kept(request, key_id, lifecycle)
    await runtime(request).media_index.add(media_key, size, ttl=kept.ttl, keep_forever=kept.keep_forever, key_id=key_id, acl=kept.acl)


async def _store(request: Request, key: str, content_type: str, data: bytes, key_id: str | None) -> str:
    rt = runtime(request)
    lifecycle = _lifecycle(request)
    await rt.media.put(MediaBlob(data, content_type), key)
    await _index(request, key, len(data), key_id, lifecycle)
    return rt.media.url(key, base_url(request))


def _files_url(request: Request, key: str) -> str:
    """openfal's own ``/files/`` URL for a key, whatever the store: the Python client
    builds its part URLs on it, so it must be ours even when media live in S3 (where
    ``/files/`` redirects to the bucket)."""
    return f"{base_url(request)}/files/{key}"


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
    key_id = await uploader(request)
    data = await read_body(request, runtime(request).settings.max_upload_bytes)
    content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
    key = new_key(content_type, request.headers.get("x-fal-file-name"))
    return {"access_url": await _store(request, key, content_type, data, key_id)}


class InitiateUpload(BaseModel):
    """The JS client's (and the Python fallback's) description of the file to come."""

    content_type: str | None = Field(None, max_length=200)
    file_name: str | None = Field(None, max_length=1000)


@router.post("/storage/upload/initiate")
async def initiate(request: Request, key: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    body = parse_body(InitiateUpload, await json_body(request))
    content_type = body.content_type or DEFAULT_CONTENT_TYPE
    media_key = new_key(content_type, body.file_name)
    ticket = _signer(request).ticket(Ticket(media_key=media_key, content_type=content_type, key_id=key.id if key else None))
    return {
        "upload_url": f"{base_url(request)}/storage/upload/put/{ticket}",
        "file_url": runtime(request).media.url(media_key, base_url(request)),
    }


@router.put("/storage/upload/put/{ticket}")
async def put_upload(ticket: str, request: Request) -> JSONResponse:
    opened = _signer(request).open_ticket(ticket, multipart=False)
    if opened is None:
        raise Unauthorized("Invalid or expired upload URL")
    data = await read_body(request, runtime(request).settings.max_upload_bytes)
    content_type = request.headers.get("content-type") or opened.content_type
    await _store(request, opened.media_key, content_type, data, opened.key_id)
    return JSONResponse({}, status_code=200)


# Multipart uploads -------------------------------------------------------------------


class CompletedPart(BaseModel):
    partNumber: int = Field(ge=1, le=MAX_PARTS)  # noqa: N815 - fal's wire name
    etag: str = Field(min_length=1, max_length=200)


class CompleteUpload(BaseModel):
    parts: list[CompletedPart] = Field(min_length=1, max_length=MAX_PARTS)


async def _begin_multipart(request: Request, key_id: str | None, content_type: str, file_name: str | None) -> tuple[str, str]:
    """(media key, signed ticket) of a new multipart upload."""
    lifecycle = _lifecycle(request)  # a bad header is refused before anything is begun
    media_key = new_key(content_type, file_name)
    upload_id = await runtime(request).media.begin_upload(media_key, content_type)
    ticket = Ticket(media_key=media_key, content_type=content_type, key_id=key_id, upload_id=upload_id, lifecycle=lifecycle)
    return media_key, _signer(request).ticket(ticket)


def _open_multipart(request: Request, ticket: str, key: str | None = None) -> Ticket:
    opened = _signer(request).open_ticket(ticket, multipart=True)
    if opened is None or (key is not None and key != opened.media_key):
        raise Unauthorized("Invalid or expired upload URL")
    return opened


async def _put_part(request: Request, ticket: Ticket, number: int) -> JSONResponse:
    if not 1 <= number <= MAX_PARTS:
        raise BadRequest(f"Part numbers go from 1 to {MAX_PARTS}")
    assert ticket.upload_id is not None
    data = await read_body(request, runtime(request).settings.max_upload_bytes)
    etag = await runtime(request).media.put_part(ticket.media_key, ticket.upload_id, number, data)
    # the Python client reads the ETag header, the JS client the JSON body
    return JSONResponse({"partNumber": number, "etag": etag}, headers={"ETag": etag})


async def _complete(request: Request, ticket: Ticket) -> str:
    rt = runtime(request)
    body = parse_body(CompleteUpload, await json_body(request))
    numbers = [part.partNumber for part in body.parts]
    if len(set(numbers)) != len(numbers):
        raise BadRequest("A part number is listed twice")
    assert ticket.upload_id is not None
    size = await rt.media.finish_upload(
        ticket.media_key, ticket.upload_id, [(p.partNumber, p.etag) for p in body.parts], rt.settings.max_multipart_upload_bytes
    )
    await _index(request, ticket.media_key, size, ticket.key_id, ticket.lifecycle)
    return _files_url(request, ticket.media_key)


@router.post("/files/upload/multipart")
async def python_multipart_begin(request: Request) -> dict[str, Any]:
    """The Python client's form: the part URLs hang off the file's own URL."""
    key_id = await uploader(request)
    content_type = request.headers.get("content-type") or DEFAULT_CONTENT_TYPE
    media_key, ticket = await _begin_multipart(request, key_id, content_type, request.headers.get("x-fal-file-name"))
    return {"access_url": _files_url(request, media_key), "uploadId": ticket}


@router.put("/files/{key:path}/multipart/{ticket}/{number}")
async def python_multipart_part(key: str, ticket: str, number: int, request: Request) -> JSONResponse:
    return await _put_part(request, _open_multipart(request, ticket, key), number)


@router.post("/files/{key:path}/multipart/{ticket}/complete")
async def python_multipart_complete(key: str, ticket: str, request: Request) -> dict[str, Any]:
    return {"access_url": await _complete(request, _open_multipart(request, ticket, key))}


@router.post("/storage/upload/initiate-multipart")
async def js_multipart_begin(request: Request, key: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    """The JS client's form: one upload URL; parts are ``{url}/{n}``, then ``{url}/complete``,
    sent without auth headers (the ticket in the URL is the credential)."""
    body = parse_body(InitiateUpload, await json_body(request))
    media_key, ticket = await _begin_multipart(request, key.id if key else None, body.content_type or DEFAULT_CONTENT_TYPE, body.file_name)
    return {"upload_url": f"{base_url(request)}/storage/upload/multipart/{ticket}", "file_url": _files_url(request, media_key)}


@router.put("/storage/upload/multipart/{ticket}/{number}")
async def js_multipart_part(ticket: str, number: int, request: Request) -> JSONResponse:
    return await _put_part(request, _open_multipart(request, ticket), number)


@router.post("/storage/upload/multipart/{ticket}/complete")
async def js_multipart_complete(ticket: str, request: Request) -> dict[str, Any]:
    return {"file_url": await _complete(request, _open_multipart(request, ticket))}
