"""FastAPI dependencies: the runtime, the caller's key (``current_key``, from
http/credentials.py), the public base URL, the body."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from openfal.errors import InputInvalid, PayloadTooLarge
from openfal.http.credentials import current_key
from openfal.runtime import Runtime
from openfal.validation import loads_strict

__all__ = ["base_url", "current_key", "json_body", "read_body", "runtime"]


def runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def base_url(request: Request) -> str:
    """openfal's own public URL: configured, else what the client used to reach us."""
    configured = runtime(request).settings.public_base_url
    return configured or str(request.base_url).rstrip("/")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it passes ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    """The JSON body, bounded by ``max_body_bytes``; an empty body is ``{}``. Python's
    NaN/Infinity extensions are refused: they could not be answered back as JSON."""
    raw = await read_body(request, runtime(request).settings.max_body_bytes)
    if not raw.strip():
        return {}
    try:
        return loads_strict(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputInvalid(
            [{"loc": ["body", getattr(exc, "pos", 0)], "msg": "JSON decode error", "type": "json_invalid", "ctx": {"error": str(exc)}}]
        ) from None
