"""Re-hosting an upstream result's files before the request completes.

Every dict in the result with a ``url`` string (``images[].url``, ``video.url``...) that
is http(s) or a data URI is downloaded and replaced by a ``MediaBlob``; the worker then
writes the blobs to openfal's media store and puts openfal's File objects in their
place, so clients never see an upstream URL. All files are fetched before anything is
replaced: one failure fails the result, nothing is half rewritten.

Downloads go through ``openfal.fetch``: one guarded redirect loop (private addresses
refused as each hop is dialled, unless the operator allows them), streamed, size- and
time-limited; small files stay in memory, past ``SPILL_BYTES`` they are written to a
temporary file that travels to the worker as ``MediaBlob(data=Path)``. Its neutral
``FetchError`` becomes a ``DownloadFailed`` here, worded to follow "The upstream
result's file at images[0].url".
"""

from __future__ import annotations

import asyncio
import io
import mimetypes
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import unquote, urlsplit

from openfal.fetch import MAX_REDIRECTS, ClientFor, FetchError, decode_data_uri, opened, read_spilling
from openfal.models import MediaBlob, Usage

SPILL_BYTES = 8 * 1024 * 1024

GENERIC_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/binary"}
PARALLEL_DOWNLOADS = 4
#: fields publish() writes itself; anything else in an upstream file dict is kept
_FILE_FIELDS = {"url", "content_type", "file_name", "file_size", "width", "height", "file_data"}


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


async def download(http: ClientFor, url: str, *, max_bytes: int, timeout: float, tmp_dir: Path) -> Downloaded:
    """The file at ``url``. ``http(url)`` gives the client for each hop: the guarded one
    (private addresses refused as they are dialled), or a plain one for origins the
    operator configured, such as the upstream itself."""
    try:
        async with opened(url, http, max_bytes=max_bytes, timeout=timeout, ok={200}) as response:
            data, size = await read_spilling(response, url, max_bytes=max_bytes, spill_bytes=SPILL_BYTES, tmp_dir=tmp_dir)
            return Downloaded(data, response.headers.get("content-type"), size)
    except FetchError as exc:
        raise download_failed(exc) from None


def from_data_uri(uri: str, max_bytes: int) -> Downloaded:
    """A ``data:[type][;base64],payload`` file, refused past ``max_bytes``."""
    try:
        media_type, data = decode_data_uri(uri, max_bytes=max_bytes)
    except FetchError as exc:
        raise download_failed(exc) from None
    return Downloaded(data, media_type.strip() or None, len(data))


def download_failed(exc: FetchError) -> DownloadFailed:
    """A failed download, said of the file ("The upstream result's file at X ...")."""
    match exc.kind:
        case "scheme" | "no_host":
            problem = "is not an http(s) URL"
        case "refused":
            problem = "points at a non-public address (set allow_private_urls to allow it)"
        case "invalid_url":
            problem = "was redirected to a URL that is not http(s)"
        case "timeout" | "failed":
            problem = f"could not be downloaded ({type(exc.cause).__name__})"
        case "status":
            problem = f"answered HTTP {exc.status}"
        case "too_large":
            problem = f"is larger than {exc.limit} bytes" + (f" ({exc.size})" if exc.size is not None else "")
        case "redirects":
            problem = f"redirected more than {MAX_REDIRECTS} times"
        case "deadline":
            problem = f"did not download within {exc.limit:g} s"
        case "malformed_data":
            problem = "is a malformed data URI"
        case "bad_base64":
            problem = "is a data URI with invalid base64"
    return DownloadFailed(problem, retryable=exc.retryable)


class RehostFailed(Exception):
    def __init__(self, where: str, problem: str, *, retryable: bool) -> None:
        super().__init__(f"The upstream result's file at {where} {problem}")
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class MediaRef:
    """One file dict in a result, and where it sits (``images[0]``)."""

    where: str
    file: dict[str, Any]


def is_media_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://", "data:"))


def find_media(payload: Any, where: str = "") -> list[MediaRef]:
    """Every dict with a media ``url`` (not looking inside such dicts)."""
    if isinstance(payload, dict):
        if is_media_url(payload.get("url")):
            return [MediaRef(where or "(result)", payload)]
        return [ref for key, value in payload.items() for ref in find_media(value, f"{where}.{key}" if where else str(key))]
    if isinstance(payload, list):
        return [ref for i, value in enumerate(payload) for ref in find_media(value, f"{where}[{i}]")]
    return []


Fetch = Callable[[str], Awaitable[Downloaded]]


async def rehost(payload: Any, fetch: Fetch, *, max_bytes: int) -> tuple[Any, Usage]:
    """The payload with every media dict replaced by a MediaBlob, and what it delivered."""
    refs = find_media(payload)
    if not refs:
        return payload, Usage()
    gate = asyncio.Semaphore(PARALLEL_DOWNLOADS)

    async def one(ref: MediaRef) -> MediaBlob:
        url = ref.file["url"]
        async with gate:
            try:
                got = from_data_uri(url, max_bytes) if url.startswith("data:") else await fetch(url)
            except DownloadFailed as exc:
                raise RehostFailed(f"{ref.where}.url", str(exc), retryable=exc.retryable) from None
        try:
            return await asyncio.to_thread(_blob, ref.file, got)
        except BaseException:
            _discard(got.data)
            raise

    tasks = [asyncio.create_task(one(ref)) for ref in refs]
    try:
        blobs = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        for blob in done:
            if isinstance(blob, MediaBlob):
                _discard(blob.data)
        raise
    replaced = {id(ref.file): blob for ref, blob in zip(refs, blobs, strict=True)}
    return _replace(payload, replaced), _usage(refs, blobs)


def discard_blobs(payload: Any) -> None:
    """Remove the temporary files of a rehosted payload that will not be published."""
    if isinstance(payload, MediaBlob):
        _discard(payload.data)
    elif isinstance(payload, dict):
        for value in payload.values():
            discard_blobs(value)
    elif isinstance(payload, list):
        for value in payload:
            discard_blobs(value)


def _discard(data: bytes | Path) -> None:
    if isinstance(data, Path):
        data.unlink(missing_ok=True)


def _replace(payload: Any, replaced: dict[int, MediaBlob]) -> Any:
    if isinstance(payload, dict):
        if id(payload) in replaced:
            return replaced[id(payload)]
        return {key: _replace(value, replaced) for key, value in payload.items()}
    if isinstance(payload, list):
        return [_replace(value, replaced) for value in payload]
    return payload


def _blob(file: dict[str, Any], got: Downloaded) -> MediaBlob:
    content_type = _content_type(file, got)
    width, height = _int(file.get("width")), _int(file.get("height"))
    if (width is None or height is None) and content_type.startswith("image/"):
        width, height = _image_size(got.data)
    extra = {k: v for k, v in file.items() if k not in _FILE_FIELDS}
    return MediaBlob(got.data, content_type, _file_name(file), width, height, extra)


def _content_type(file: dict[str, Any], got: Downloaded) -> str:
    served = (got.content_type or "").split(";", 1)[0].strip().lower()
    if served not in GENERIC_TYPES:
        return served
    declared = file.get("content_type")
    if isinstance(declared, str) and declared.strip():
        return declared.strip()
    if not file["url"].startswith("data:"):
        guessed, _ = mimetypes.guess_type(urlsplit(file["url"]).path)
        if guessed:
            return guessed
    return "application/octet-stream"


def _file_name(file: dict[str, Any]) -> str | None:
    name = file.get("file_name")
    if not isinstance(name, str) or not name.strip():
        if file["url"].startswith("data:"):
            return None
        name = unquote(PurePosixPath(urlsplit(file["url"]).path).name)
        if "." not in name:
            return None
    name = PurePosixPath(name.replace("\\", "/")).name.strip()
    return name[:200] or None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _image_size(data: bytes | Path) -> tuple[int | None, int | None]:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.size
    except Exception:
        return None, None


def _usage(refs: list[MediaRef], blobs: list[MediaBlob]) -> Usage:
    seconds = 0.0
    for ref, blob in zip(refs, blobs, strict=True):
        if blob.content_type.startswith("video/"):
            duration = ref.file.get("duration")
            if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
                seconds += float(duration)
            else:
                seconds += mp4_duration(blob.data) or 0.0
    return Usage(video_seconds=round(seconds, 3))


def mp4_duration(data: bytes | Path) -> float | None:
    """Seconds from an MP4/MOV ``moov/mvhd`` box, or None when there is none."""
    try:
        if isinstance(data, bytes):
            return _mvhd(io.BytesIO(data), len(data))
        with data.open("rb") as handle:
            return _mvhd(handle, data.stat().st_size)
    except (OSError, struct.error, ValueError):
        return None


def _boxes(f: BinaryIO, start: int, end: int):  # type: ignore[no-untyped-def]
    pos = start
    while pos + 8 <= end:
        f.seek(pos)
        size, kind = struct.unpack(">I4s", f.read(8))
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", f.read(8))[0], 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, pos + size
        pos += size


def _mvhd(f: BinaryIO, total: int) -> float | None:
    for kind, start, end in list(_boxes(f, 0, total)):
        if kind != b"moov":
            continue
        for inner, body, _ in list(_boxes(f, start, end)):
            if inner == b"mvhd":
                f.seek(body)
                version = f.read(4)[0]
                if version == 1:
                    f.seek(16, io.SEEK_CUR)
                    timescale, duration = struct.unpack(">IQ", f.read(12))
                else:
                    f.seek(8, io.SEEK_CUR)
                    timescale, duration = struct.unpack(">II", f.read(8))
                return duration / timescale if timescale else None
    return None
