"""openfal's own media URLs as inputs. A client that uploaded a file through the
storage API passes its ``/files/{key}`` URL as ``image_url``; the server reads that file
from its media folder rather than fetching itself over the network (which the private
address guard would refuse on a LAN or loopback deployment), and a relay inlines it as
a data URI, since an upstream cannot reach a private openfal.

Only keys that exist in the local media folder resolve; with S3 media the URLs point
at the bucket and are fetched like any other URL."""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from openfal.media.local import LocalMediaStore

PREFIX = "/files/"


def own_file(url: str, media: LocalMediaStore) -> Path | None:
    """The local file behind one of our media URLs (any host: keys are unguessable)."""
    if not url.startswith(("http://", "https://")):
        return None
    path = urlsplit(url).path
    return media.path(path[len(PREFIX) :]) if path.startswith(PREFIX) else None


class OwnMediaTransport(httpx.AsyncBaseTransport):
    """Answers GETs of our own media URLs from disk; everything else goes to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, media: LocalMediaStore) -> None:
        self.inner = inner
        self.media = media

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        path = own_file(str(request.url), self.media) if request.method == "GET" else None
        if path is None:
            return await self.inner.handle_async_request(request)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return httpx.Response(200, content=path.read_bytes(), headers={"Content-Type": content_type}, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def inline_own_media(value: Any, media: LocalMediaStore, max_bytes: int) -> Any:
    """A copy of an input with our media URLs replaced by data URIs (for upstreams)."""
    if isinstance(value, str):
        path = own_file(value, media)
        if path is None or path.stat().st_size > max_bytes:
            return value
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return f"data:{content_type};base64,{base64.b64encode(path.read_bytes()).decode()}"
    if isinstance(value, dict):
        return {k: inline_own_media(v, media, max_bytes) for k, v in value.items()}
    if isinstance(value, list):
        return [inline_own_media(v, media, max_bytes) for v in value]
    return value
