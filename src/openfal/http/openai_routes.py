"""The OpenAI Images API under ``/v1`` (``openfal.openai_images`` does the mapping).

Every call is one request on the queue, submitted with the caller's key (``Bearer``,
as OpenAI's SDKs send it, or ``Key``) and the same headers and ``?fal_webhook=`` as a
fal submit, then waited for like ``fal.run`` (a caller that hangs up cancels it). Every
error, from auth to a failed run, is answered in OpenAI's shape."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from openfal import openai_images
from openfal.errors import OpenfalError, PayloadTooLarge
from openfal.http import queue_routes, stream_routes
from openfal.http.deps import base_url, current_key, json_body, runtime
from openfal.http.errors import error_response
from openfal.http.wire import submit_options
from openfal.media.names import new_key
from openfal.models import ApiKey, MediaBlob
from openfal.openai_images import OpenAIError, bad
from openfal.service import Result

router = APIRouter(prefix="/v1", tags=["openai"])

#: what ``/v1/images/edits`` accepts as images
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/avif")
#: a multipart text field (a prompt, a model name): no endpoint takes more
MAX_FIELD_BYTES = 1024 * 1024


def _error(exc: OpenAIError) -> JSONResponse:
    """OpenAI's error shape, with fal's ``error_type`` and ``X-Fal-Error-Type`` beside it."""
    return error_response(exc.body(), exc.status_code)


@router.post("/images/generations", summary="Create images (OpenAI Images API)")
async def generations(request: Request) -> Response:
    try:
        key = await current_key(request)
        body = await json_body(request)
        if not isinstance(body, dict):
            raise bad("The request body must be a JSON object")
        params = openai_images.parse_request(body)
        endpoint_id = openai_images.resolve_model(params.model, runtime(request).settings.openai_model_aliases)
        data = openai_images.generation_input(endpoint_id, params)
        if params.stream:
            return await _stream(request, endpoint_id, data, key, params, "image_generation")
        result = await _run(request, endpoint_id, data, key)
        return JSONResponse(await _answer(request, result, params.response_format))
    except OpenfalError as exc:
        return _error(openai_images.from_openfal(exc))
    except OpenAIError as exc:
        return _error(exc)


@router.post("/images/edits", summary="Edit images (OpenAI Images API, multipart)")
async def edits(request: Request) -> Response:
    try:
        key = await current_key(request)
        rt = runtime(request)
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise bad("/v1/images/edits takes multipart/form-data with 'image' and 'prompt'")
        # the whole body is bounded as it streams (http/guard.py); text fields to 1 MiB
        async with request.form(max_files=16, max_fields=64, max_part_size=MAX_FIELD_BYTES) as form:
            if form.get("mask") is not None:
                raise bad("Masks are not supported: FLUX Kontext and image-to-image edit the whole image from the prompt", "mask", "unsupported_parameter")
            files = [f for name in ("image", "image[]") for f in form.getlist(name) if isinstance(f, UploadFile)]
            if not files:
                raise bad("'image' is a required property", "image", "missing_required_parameter")
            values = {name: value for name, value in form.items() if isinstance(value, str)}
            params = openai_images.parse_request(values)
            model_endpoint = openai_images.resolve_model(params.model, rt.settings.openai_edit_model_aliases)
            endpoint_id = openai_images.edit_endpoint(model_endpoint, params.model, len(files))
            urls = [await _store_image(request, f) for f in files]
        data = openai_images.edit_input(endpoint_id, params, urls)
        if params.stream:
            return await _stream(request, endpoint_id, data, key, params, "image_edit")
        result = await _run(request, endpoint_id, data, key)
        return JSONResponse(await _answer(request, result, params.response_format))
    except HTTPException as exc:  # a malformed multipart body
        return _error(bad(str(exc.detail)))
    except OpenfalError as exc:
        return _error(openai_images.from_openfal(exc))
    except OpenAIError as exc:
        return _error(exc)


async def _store_image(request: Request, upload: UploadFile) -> str:
    """An uploaded image, kept in openfal's media (as a storage upload is) so the worker
    reads it like any other input URL."""
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if content_type == "application/octet-stream" or not content_type:
        content_type = _sniff(await upload.read(16))
        await upload.seek(0)
    if content_type not in IMAGE_TYPES:
        raise bad(f"Invalid image file type {content_type!r}: use PNG, JPEG, WEBP, GIF or AVIF", "image", "invalid_image_format")
    rt = runtime(request)
    data = await upload.read(rt.settings.max_upload_bytes + 1)
    if len(data) > rt.settings.max_upload_bytes:
        raise PayloadTooLarge(f"An image is larger than {rt.settings.max_upload_bytes} bytes")
    key = new_key(content_type, upload.filename)
    await rt.media.put(MediaBlob(data, content_type), key)
    await rt.media_index.add(key, len(data))
    return rt.media.url(key, base_url(request))


def _sniff(head: bytes) -> str:
    if head.startswith(b"\x89PNG"):
        return "image/png"
    if head.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"


async def _run(request: Request, endpoint_id: str, data: dict[str, Any], key: ApiKey | None) -> Result:
    """Submit on the queue and wait for the result; a caller that leaves cancels it."""
    rt = runtime(request)
    submitted = await rt.service.submit(endpoint_id, data, key=key, base_url=base_url(request), options=submit_options(request.headers, request.query_params))
    record = submitted.record
    request.state.fal_request_id = record.id
    result = await queue_routes.wait_or_abandon(request, record)
    if result is None:
        raise OpenAIError(499, "The client closed the connection; the request was cancelled", code="client_cancelled")
    if result.status_code >= 400:
        raise openai_images.from_result(result.status_code, result.body)
    return result


async def _stream(request: Request, endpoint_id: str, data: dict[str, Any], key: ApiKey | None, params: openai_images.ImageRequest, kind: str) -> Response:
    """``stream: true``: OpenAI's SSE, ``{kind}.partial_image`` events from the run's
    previews (at most ``partial_images``), then one ``{kind}.completed`` per image, all
    ``b64_json``. Errors before the run starts are ordinary OpenAI errors; after, an
    ``error`` event, which the SDKs raise. A caller that hangs up cancels the run."""
    rt = runtime(request)
    submitted = await rt.service.submit(endpoint_id, data, key=key, base_url=base_url(request), options=submit_options(request.headers, request.query_params))
    record = submitted.record
    request.state.fal_request_id = record.id
    events = stream_routes._follow(rt.service, record, key, images=True)
    pump = stream_routes._until_disconnected(request, events)

    async def sse() -> AsyncIterator[str]:
        finished, sent, last = False, 0, None
        try:
            async for event in pump:
                if isinstance(event, stream_routes.KeepAlive):
                    yield ": keep-alive\n\n"
                elif isinstance(event, stream_routes.Partial):
                    preview = (event.body.get("images") or [{}])[0].get("url")
                    if preview and preview != last and sent < params.partial_images:
                        last, sent = preview, sent + 1
                        b64 = base64.b64encode(await _image_bytes(request, preview)).decode()
                        yield _event(f"{kind}.partial_image", {"b64_json": b64, "partial_image_index": sent - 1, "output_format": "jpeg"})
                else:
                    finished = True
                    result = event.result
                    try:
                        if result.status_code >= 400:
                            raise openai_images.from_result(result.status_code, result.body)
                        answer = await _answer(request, result, "b64_json")
                    except OpenAIError as exc:
                        yield _event("error", exc.body())
                        return
                    for item, image in zip(answer["data"], openai_images.images_of(result.body), strict=True):
                        size = f"{image.get('width')}x{image.get('height')}" if image.get("width") else None
                        fmt = (image.get("content_type") or "image/jpeg").split("/")[-1]
                        yield _event(f"{kind}.completed", {"b64_json": item["b64_json"], "size": size, "output_format": fmt})
                    return
        finally:
            with anyio.CancelScope(shield=True):
                await pump.aclose()
                if not finished:
                    await rt.service.abandon(record)

    return StreamingResponse(sse(), media_type="text/event-stream", headers=stream_routes.SSE_HEADERS)


def _event(name: str, data: dict[str, Any]) -> str:
    body = {"type": name, "created_at": int(time.time()), **data}
    return f"event: {name}\ndata: {json.dumps(body)}\n\n"


async def _answer(request: Request, result: Result, response_format: str) -> dict[str, Any]:
    images = openai_images.images_of(result.body)
    if not images:
        raise OpenAIError(502, "The endpoint returned no images", type_="server_error")
    data = []
    for image in images:
        if response_format == "url":
            data.append({"url": image["url"]})
        else:
            data.append({"b64_json": base64.b64encode(await _image_bytes(request, image["url"])).decode()})
    body: dict[str, Any] = {"created": int(time.time()), "data": data}
    if isinstance(result.body, dict) and isinstance(result.body.get("prompt"), str):
        for item in data:
            item["revised_prompt"] = result.body["prompt"]
    return body


async def _image_bytes(request: Request, url: str) -> bytes:
    """An output image's bytes: from openfal's media (every output is stored there,
    relayed ones included), or a ``data:`` URI."""
    inline = openai_images.data_uri_bytes(url)
    if inline is not None:
        return inline
    media = runtime(request).media
    key = media.key_of(url)
    if key is None or await media.size(key) is None:
        raise OpenAIError(502, "An output image is not in this server's media", type_="server_error")
    return b"".join([chunk async for chunk in media.chunks(key)])

