"""Guarded download of one result file: streamed, size- and time-limited, and
refusing private addresses (on every redirect hop) unless the operator allows them.

Hosts are checked before each hop (a clear error early) and, through
``openfal.fetch``'s guarded client, again at connect time on the addresses actually
dialled (DNS rebinding). Small files stay in memory; past ``SPILL_BYTES`` they are written to a temporary file
that travels to the worker as ``MediaBlob(data=Path)``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpx

from openfal.fetch import AddressRefused

SPILL_BYTES = 8 * 1024 * 1024
MAX_REDIRECTS = 5


class DownloadFailed(Exception):
    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        #: whether a later try could succeed (network trouble, 5xx) or not (404, too large)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class Downloaded:
    data: bytes | Path
    content_type: str | None
    size: int


def decode_data_uri(uri: str, max_bytes: int) -> Downloaded:
    """``data:[type][;base64],payload`` decoded, refused past ``max_bytes``."""
    head, sep, payload = uri[5:].partition(",")
    if not sep:
        raise DownloadFailed("is a malformed data URI", retryable=False)
    params = head.split(";")
    content_type = params[0].strip() or None
    if len(payload) > max_bytes * 4 // 3 + 8:
        raise DownloadFailed(f"is larger than {max_bytes} bytes", retryable=False)
    try:
        data = base64.b64decode(payload, validate=False) if "base64" in params[1:] else unquote_to_bytes(payload)
    except ValueError:
        raise DownloadFailed("is a data URI with invalid base64", retryable=False) from None
    if len(data) > max_bytes:
        raise DownloadFailed(f"is larger than {max_bytes} bytes", retryable=False)
    return Downloaded(data, content_type, len(data))


ClientFor = Callable[[str], httpx.AsyncClient]


async def download(http: ClientFor, url: str, *, max_bytes: int, timeout: float, tmp_dir: Path) -> Downloaded:
    """The file at ``url``. ``http(url)`` gives the client for each hop: the guarded one
    (private addresses refused as they are dialled), or a plain one for origins the
    operator configured, such as the upstream itself."""
    try:
        async with asyncio.timeout(timeout):
            return await _download(http, url, max_bytes=max_bytes, tmp_dir=tmp_dir)
    except TimeoutError:
        raise DownloadFailed(f"did not download within {timeout:g} s", retryable=True) from None


async def _download(http: ClientFor, url: str, *, max_bytes: int, tmp_dir: Path) -> Downloaded:
    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise DownloadFailed("is not an http(s) URL", retryable=False)
        try:
            async with http(url).stream("GET", url, follow_redirects=False) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    retryable = response.status_code in {408, 425, 429} or response.status_code >= 500
                    raise DownloadFailed(f"answered HTTP {response.status_code}", retryable=retryable)
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > max_bytes:
                    raise DownloadFailed(f"is larger than {max_bytes} bytes ({declared})", retryable=False)
                content_type = response.headers.get("content-type")
                return await _read(response, max_bytes, tmp_dir, content_type)
        except AddressRefused:
            raise DownloadFailed("points at a non-public address (set allow_private_urls to allow it)", retryable=False) from None
        except httpx.InvalidURL:
            # no HTTPError: httpx raises it for a Location such as data: or mailto:
            raise DownloadFailed("was redirected to a URL that is not http(s)", retryable=False) from None
        except httpx.HTTPError as exc:
            raise DownloadFailed(f"could not be downloaded ({type(exc).__name__})", retryable=True) from None
    raise DownloadFailed(f"redirected more than {MAX_REDIRECTS} times", retryable=False)


async def _read(response: httpx.Response, max_bytes: int, tmp_dir: Path, content_type: str | None) -> Downloaded:
    chunks: list[bytes] = []
    size = 0
    path: Path | None = None
    handle = None
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise DownloadFailed(f"is larger than {max_bytes} bytes", retryable=False)
            if handle is None and size > SPILL_BYTES:
                tmp_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix="relay-", suffix=".part", dir=tmp_dir)
                path, handle = Path(name), os.fdopen(fd, "wb")
                await asyncio.to_thread(handle.write, b"".join(chunks))
                chunks = []
            if handle is not None:
                await asyncio.to_thread(handle.write, chunk)
            else:
                chunks.append(chunk)
    except BaseException:
        if handle is not None:
            handle.close()
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    if handle is not None and path is not None:
        handle.close()
        return Downloaded(path, content_type, size)
    return Downloaded(b"".join(chunks), content_type, size)
