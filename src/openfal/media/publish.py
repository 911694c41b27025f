"""Turning a backend's ``MediaBlob`` placeholders into fal File objects, and its step
previews into URLs: the one way a run's media reach the media store.

Runs before a request is marked COMPLETED, so every URL in a result is readable the
moment the client sees it. ``sync_mode`` inlines files as data URIs instead, as fal does.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from openfal.events import Preview
from openfal.media import MediaStore
from openfal.media.names import new_key
from openfal.models import MediaBlob

OnStored = Callable[[str, int], Awaitable[None]]


async def publish(
    payload: Any, *, media: MediaStore, base_url: str, inline: bool, on_stored: OnStored | None = None
) -> Any:
    """A copy of ``payload`` with every MediaBlob replaced by its File object."""
    if isinstance(payload, MediaBlob):
        return await _file(payload, media, base_url, inline, on_stored)
    if isinstance(payload, dict):
        return {k: await publish(v, media=media, base_url=base_url, inline=inline, on_stored=on_stored) for k, v in payload.items()}
    if isinstance(payload, list | tuple):
        return [await publish(v, media=media, base_url=base_url, inline=inline, on_stored=on_stored) for v in payload]
    return payload


async def _file(blob: MediaBlob, media: MediaStore, base_url: str, inline: bool, on_stored: OnStored | None) -> dict[str, Any]:
    size = blob.size
    if inline:
        url = f"data:{blob.content_type};base64,{base64.b64encode(blob.read()).decode()}"
        key = None
    else:
        key = await _put(blob, media, on_stored)
        url = media.url(key, base_url)
    file: dict[str, Any] = {
        **blob.extra,
        "url": url,
        "content_type": blob.content_type,
        "file_name": blob.file_name or (key.rsplit("/", 1)[-1] if key else f"output-{int(time.time())}"),
        "file_size": size,
    }
    if blob.width is not None:
        file["width"], file["height"] = blob.width, blob.height
    return file


async def publish_preview(preview: Preview, *, media: MediaStore, on_stored: OnStored | None = None) -> str:
    """The media key of a step preview, stored like a result's files (a data URI would
    bloat every status poll and SSE event that carries it); its URL is the caller's to
    make (attempt.py signs it: previews are not public)."""
    blob = MediaBlob(preview.data, preview.content_type, "preview.jpg")
    return await _put(blob, media, on_stored)


async def _put(blob: MediaBlob, media: MediaStore, on_stored: OnStored | None) -> str:
    """Write ``blob`` under a fresh key and return the key."""
    key = new_key(blob.content_type, blob.file_name)
    await media.put(blob, key)
    if on_stored is not None:
        await on_stored(key, blob.size)
    return key


def discard_files(payload: Any) -> None:
    """Delete the temporary files behind MediaBlobs once they are published."""
    if isinstance(payload, MediaBlob):
        if isinstance(payload.data, Path):
            payload.data.unlink(missing_ok=True)
    elif isinstance(payload, dict):
        for value in payload.values():
            discard_files(value)
    elif isinstance(payload, list | tuple):
        for value in payload:
            discard_files(value)
