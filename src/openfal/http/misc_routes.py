"""Routes beside the queue: health, media files, the webhook JWKS, the endpoint list,
per-endpoint OpenAPI and a key's request history (the playground reads the last three)."""

from __future__ import annotations

import mimetypes
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response

from openfal.endpoints.catalog import CATALOG
from openfal.errors import UnknownEndpoint
from openfal.http.deps import base_url, current_key, runtime
from openfal.http.errors import error_response
from openfal.http.media_access_routes import check_file
from openfal.http.openapi import endpoint_openapi
from openfal.http.wire import request_urls
from openfal.key_admin import key_json
from openfal.media.local import LocalMediaStore
from openfal.media.names import is_valid_key
from openfal.models import ApiKey, Status

router = APIRouter()

#: media types shown in the browser; anything else is served as a download
INLINE_TYPES = ("image/", "video/", "audio/")
#: inline types that can carry script
ACTIVE_TYPES = {"image/svg+xml"}


@router.get("/health", tags=["server"])
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/health/ready", tags=["server"])
async def ready(request: Request) -> JSONResponse:
    """Readiness: the database answers (503 if not); with the live worker capacity per
    backend, which a load balancer may ignore (API nodes serve without local workers)."""
    rt = runtime(request)
    try:
        await rt.db.ping()
        capacity = await rt.registry.capacity()
    except Exception as exc:
        return JSONResponse({"status": "unavailable", "database": f"{type(exc).__name__}: {exc}"}, status_code=503)
    warming = rt.warming()  # preloaded models still loading and compiling (OPENFAL_PRELOAD_MODELS)
    if warming:
        return JSONResponse({"status": "warming_up", "database": "ok", "warming": warming, "workers": capacity}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "workers": capacity})


@router.get("/.well-known/jwks.json", tags=["server"], summary="Public keys that sign webhooks")
async def jwks(request: Request) -> dict[str, Any]:
    signer = runtime(request).signer
    assert signer is not None
    return signer.jwks()


@router.get("/files/{key:path}", tags=["media"], summary="A generated or uploaded file")
async def files(key: str, request: Request) -> Response:
    """Local media are served from disk. With S3 media, the few URLs openfal hands out
    on its own host (multipart uploads, whose part URLs the Python client derives from
    the file URL) redirect to the bucket."""
    store = runtime(request).media
    if not is_valid_key(key):
        return error_response({"detail": "File not found"}, 404)
    # a file with an ACL is served only to whom it allows (or on a signed URL)
    public = await check_file(request, key)
    if not isinstance(store, LocalMediaStore):
        return RedirectResponse(store.url(key, base_url(request)), status_code=307)
    path = store.path(key)
    if path is None:
        return error_response({"detail": "File not found"}, 404)
    # Anyone with a key may upload any file, and these URLs share the playground's origin
    # (where the API key lives): uploaded HTML or SVG must never run as a page here.
    cache = "public, max-age=604800, immutable" if public else "private, no-store"
    headers = {"Cache-Control": cache, "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if media_type.startswith(INLINE_TYPES) and media_type not in ACTIVE_TYPES:
        return FileResponse(path, media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers, filename=path.name, content_disposition_type="attachment")


@router.get("/api/me", tags=["server"], summary="The caller's key: limits, credit, scope, expiry")
async def me(request: Request, key: ApiKey | None = Depends(current_key)) -> dict[str, Any]:
    """What a customer may want to know of their own key (the playground shows the
    balance and offers only the endpoints the key may use); ``{"key": null}`` with auth off."""
    fresh = await runtime(request).keys.get(key.id) if key is not None else None  # the balance moves
    return {"key": key_json(fresh) if fresh is not None else None}


@router.get("/api/endpoints", tags=["server"], summary="Endpoints this server serves")
async def endpoints(request: Request) -> list[dict[str, Any]]:
    return [
        {
            "endpoint_id": route.endpoint_id,
            "title": route.spec.title,
            "kind": route.spec.kind,
            "backend": route.backend,
            "family": route.spec.family,
            "licence": route.spec.licence.as_json() if route.spec.licence is not None else None,
            "input_schema": route.spec.input_model.model_json_schema(),
        }
        for route in runtime(request).router.endpoints()
        if route.spec is not None
    ]


@router.get("/openapi/queue/openapi.json", tags=["server"], summary="OpenAPI of one endpoint (fal's URL shape)")
async def openapi_for(request: Request, endpoint_id: str = Query(...)) -> dict[str, Any]:
    spec = CATALOG.get(endpoint_id)
    if spec is None:
        raise UnknownEndpoint(f"Endpoint {endpoint_id} not found")
    return endpoint_openapi(spec, base_url(request))


@router.get("/api/requests", tags=["server"], summary="The caller's requests, newest first")
async def history(
    request: Request,
    limit: int = Query(50, ge=1, le=500),
    before: int | None = Query(None, ge=0, le=2**63 - 1),
    status: Status | None = Query(None, description="only requests in this status"),
    endpoint_id: str | None = Query(None, max_length=255, description="only requests to this endpoint"),
    key: ApiKey | None = Depends(current_key),
) -> dict[str, Any]:
    records = await runtime(request).service.history(key, limit=limit, before=before, status=status, endpoint_id=endpoint_id)
    items = [
        {
            "request_id": r.id,
            "endpoint_id": r.endpoint_id,
            "status": r.status.value,
            "created_at": r.created_at,
            "completed_at": r.completed_at,
            "error": r.error,
            "seq": r.seq,
            **request_urls(r),
        }
        for r in records
    ]
    return {"items": items, "next_before": records[-1].seq if len(records) == limit else None}
