"""openfal's own media URLs as inputs. A client that uploaded a file through the
storage API (or reuses a result) passes its URL as ``image_url``; the server reads that
file from its media store rather than fetching itself over the network, which the
private-address guard would refuse on a LAN or loopback deployment, and which a bucket
on a private network (MinIO next to the workers) would not serve to the outside anyway.
A relay inlines ``/files/`` URLs as data URIs, since an upstream cannot reach a private
openfal; direct bucket URLs, made for clients to fetch, pass through."""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import httpx

from openfal.media import MediaStore
from openfal.media.names import FILES_PREFIX


def _content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


class _StoreStream(httpx.AsyncByteStream):
    """The body of an own file, read from the store only if the reader gets that far
    (a fetch refuses an over-limit Content-Length without reading)."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()  # type: ignore[attr-defined]


class OwnMediaTransport(httpx.AsyncBaseTransport):
    """Answers GETs of our own media URLs from the store; everything else goes to ``inner``.
    ``media`` is borrowed (its owner, the runtime, closes it); without one, ``opener``
    opens a store on first use (an S3 client is not free to make), closed with this."""

    def __init__(
        self, inner: httpx.AsyncBaseTransport, media: MediaStore | None = None, *, opener: Callable[[], MediaStore] | None = None
    ) -> None:
        if media is None and opener is None:
            raise ValueError("OwnMediaTransport needs a media store or a way to open one")
        self.inner = inner
        self._media = media
        self._opener = None if media is not None else opener
        self._owned: MediaStore | None = None

    @property
    def media(self) -> MediaStore:
        if self._media is None:
            assert self._opener is not None
            self._media = self._owned = self._opener()
        return self._media

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        key = self.media.key_of(str(request.url)) if request.method == "GET" else None
        size = await self.media.size(key) if key is not None else None
        if key is None or size is None:
            return await self.inner.handle_async_request(request)
        headers = {"Content-Type": _content_type(key), "Content-Length": str(size)}
        return httpx.Response(200, headers=headers, stream=_StoreStream(self.media.chunks(key)), request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()
        if self._owned is not None:
            await self._owned.close()


async def inline_own_media(value: Any, media: MediaStore, max_bytes: int) -> Any:
    """A copy of an input with our ``/files/`` URLs replaced by data URIs (for upstreams)."""
    if isinstance(value, str):
        key = media.key_of(value) if urlsplit(value).path.startswith(FILES_PREFIX) else None
        size = await media.size(key) if key is not None else None
        if key is None or size is None or size > max_bytes:
            return value
        data = b"".join([chunk async for chunk in media.chunks(key)])
        return f"data:{_content_type(key)};base64,{base64.b64encode(data).decode()}"
    if isinstance(value, dict):
        return {k: await inline_own_media(v, media, max_bytes) for k, v in value.items()}
    if isinstance(value, list):
        return [await inline_own_media(v, media, max_bytes) for v in value]
    return value
