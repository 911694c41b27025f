"""Fetching user-given URLs (``image_url``, ``image_urls``, relayed media) safely.

A URL in a request body is an instruction to make this server connect somewhere, so:

* only ``http``, ``https`` and ``data:`` URLs are accepted (fal's File model allows
  exactly these);
* no connection is made to a private, loopback, link-local, multicast or reserved
  address unless ``settings.allow_private_urls``. The check runs *at connect time*,
  on the addresses the guarded transport itself resolved and then dials, so neither a
  redirect nor a DNS answer that changes between check and connect (rebinding) can
  reach an internal service;
* redirects are followed by hand, at most ``MAX_REDIRECTS``, each hop re-checked;
* the body is streamed and abandoned as soon as it exceeds the size limit, and the
  whole fetch (redirects included) has one deadline.

The fetch itself (``opened``: the redirect loop; ``decode_data_uri``; ``read_spilling``)
fails with a neutral ``FetchError`` that each caller words for its clients: the input
fetches here (``fetch_bytes``, ``fetch_to_file``, ``fetch_image``) as an
``InputFetchFailed(field, message)``, fal's 422 with ``type: file_download_error``
naming the input field; the relay's result downloads as its ``DownloadFailed``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
import socket
import ssl
import tempfile
import warnings
from collections.abc import AsyncIterator, Callable, Container, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpcore
import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from openfal.config import Settings
from openfal.errors import InputFetchFailed
from openfal.media import MediaStore, open_media
from openfal.media.own import OwnMediaTransport
from openfal.netguard import is_public_address

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
_REDIRECTS = {301, 302, 303, 307, 308}


class AddressRefused(Exception):
    """The guarded transport refused to dial a non-public address."""

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"Refusing to connect to {host!r}: it resolves to a non-public address ({address})")
        self.host = host
        self.address = address


# -- the guarded transport ----------------------------------------------------------------


AddressPolicy = Callable[[str, str], bool]
"""(host name, resolved address) -> whether it may be dialled."""


def public_only(host: str, address: str) -> bool:
    return is_public_address(address)


class _GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself, refuses it if *any* address fails the policy, and
    dials the checked addresses in order (TLS still verifies and sends SNI for the host
    name, which httpcore takes from the URL, not from the dialled address)."""

    def __init__(self, policy: AddressPolicy) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._policy = policy

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"Cannot resolve host {host!r}: {exc.strerror}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for address in addresses:
            if not self._policy(host, address):
                raise AddressRefused(host, address)
        error: Exception = httpcore.ConnectError(f"{host!r} has no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise AddressRefused(path, "unix socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport with the connection pool rebuilt on the guarded network
    backend (httpx exposes no public hook for the network backend; ``_pool`` has been
    stable across httpx 0.2x, and the refusal tests fail loudly if that ever changes).

    ``policy`` decides per (host, address); the default admits public addresses only.
    """

    def __init__(self, *, verify: ssl.SSLContext | bool = True, policy: AddressPolicy = public_only) -> None:
        super().__init__(verify=verify, trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=_GuardedNetworkBackend(policy),
        )


def make_client(
    settings: Settings, *, media: MediaStore | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client fetches use: guarded unless private URLs are allowed, and reading our
    own media URLs from ``media`` (the runtime's store, borrowed and never closed here;
    without one, a store of its own is opened from ``settings`` on first use). Environment
    proxies are ignored, since a proxy would dial on our behalf, unchecked."""
    if transport is None:
        transport = httpx.AsyncHTTPTransport(trust_env=False) if settings.allow_private_urls else GuardedTransport()
        transport = OwnMediaTransport(transport, media, opener=lambda: open_media(settings))
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(settings.fetch_timeout_seconds),
        headers={"User-Agent": "openfal"},
    )


# -- the neutral fetch: one redirect loop, one data-URI decoder -------------------------------

FetchKind = Literal[
    "scheme",  # not http(s)
    "no_host",
    "refused",  # a non-public address (``cause`` is the AddressRefused)
    "timeout",  # httpx timed out (``cause``)
    "failed",  # another transport error (``cause``)
    "invalid_url",  # httpx refused a URL, such as a redirect to data: or mailto: (``cause``)
    "status",  # an HTTP status that is no success (``status``)
    "too_large",  # past ``limit`` bytes (``size``: the declared Content-Length, if that told)
    "redirects",  # more than MAX_REDIRECTS
    "deadline",  # the whole fetch took longer than ``limit`` seconds
    "malformed_data",  # a data URI with no ','
    "bad_base64",  # a data URI whose base64 does not decode
]


class FetchError(Exception):
    """A fetch that failed, told neutrally: each caller words it for its own clients
    (``InputFetchFailed`` for inputs here, ``DownloadFailed`` in the relay).

    ``kind`` is what went wrong at ``url`` (the hop for errors while connecting and at
    a hop's answer; the URL asked for otherwise); ``retryable`` whether a later try
    could succeed (network trouble, 408, 425, 429, 5xx) or not (404, too large).
    """

    def __init__(
        self,
        kind: FetchKind,
        url: str,
        *,
        retryable: bool = False,
        status: int | None = None,
        limit: float | None = None,
        size: int | None = None,
        cause: Exception | None = None,
    ) -> None:
        super().__init__(f"{kind}: {_short(url)}")
        self.kind, self.url, self.retryable = kind, url, retryable
        self.status, self.limit, self.size, self.cause = status, limit, size, cause


ClientFor = Callable[[str], httpx.AsyncClient]
"""The client that dials one hop's URL."""


@asynccontextmanager
async def opened(
    url: str, client_for: ClientFor, *, max_bytes: int, timeout: float, ok: Container[int] = range(200, 300)
) -> AsyncIterator[httpx.Response]:
    """The final answer to GET ``url``, headers read: redirects followed by hand (at most
    ``MAX_REDIRECTS``, each hop's URL checked and dialled by ``client_for(hop)``), its
    status in ``ok``, a declared size within ``max_bytes``. One deadline of ``timeout``
    seconds covers it all, the body read inside the block included; every failure
    (transport errors while the body streams too) is a ``FetchError``."""
    try:
        async with asyncio.timeout(timeout), _final(url, client_for, max_bytes, ok) as response:
            yield response
    except TimeoutError:
        raise FetchError("deadline", url, retryable=True, limit=timeout) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise _transport_error(exc, url) from None


def decode_data_uri(url: str, *, max_bytes: int) -> tuple[str, bytes]:
    """(media type as written, "" for none; bytes) of a ``data:[<type>][;base64],<data>`` URI."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise FetchError("malformed_data", url)
    params = header.split(";")
    if "base64" in params[1:]:
        if len(payload) * 3 // 4 > max_bytes + 3:
            raise FetchError("too_large", url, limit=max_bytes)
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise FetchError("bad_base64", url) from None
    else:
        data = unquote_to_bytes(payload)
    _check_size(len(data), max_bytes, url)
    return params[0], data


async def read_spilling(
    response: httpx.Response, url: str, *, max_bytes: int, spill_bytes: int, tmp_dir: Path
) -> tuple[bytes | Path, int]:
    """The body of ``response`` (at most ``max_bytes``) and its size: in memory, or once
    past ``spill_bytes`` in a temporary file under ``tmp_dir``, removed if reading fails."""
    chunks: list[bytes] = []
    size = 0
    path: Path | None = None
    handle = None
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            _check_size(size, max_bytes, url)
            if handle is None and size > spill_bytes:
                tmp_dir.mkdir(parents=True, exist_ok=True)
                fd, name = tempfile.mkstemp(prefix="fetch-", suffix=".part", dir=tmp_dir)
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
        return path, size
    return b"".join(chunks), size


# -- inputs: the local backend's fetches ------------------------------------------------------


async def fetch_bytes(
    url: str,
    settings: Settings,
    *,
    field: str,
    max_bytes: int | None = None,
    client: httpx.AsyncClient | None = None,
) -> bytes:
    """The body at ``url`` (http(s) or data:), at most ``max_bytes`` (default
    ``settings.fetch_max_bytes``), within ``settings.fetch_timeout_seconds``."""
    limit = max_bytes or settings.fetch_max_bytes
    try:
        if _is_data_uri(url):
            return decode_data_uri(url, max_bytes=limit)[1]
        buffer = bytearray()
        async with _input(url, settings, limit, client) as response:
            async for chunk in response.aiter_bytes(CHUNK_BYTES):
                buffer += chunk
                _check_size(len(buffer), limit, url)
        return bytes(buffer)
    except FetchError as exc:
        raise _input_error(exc, field) from None


async def fetch_to_file(
    url: str,
    path: Path,
    settings: Settings,
    *,
    field: str = "url",
    max_bytes: int | None = None,
    client: httpx.AsyncClient | None = None,
) -> tuple[str | None, int]:
    """Stream ``url`` into ``path``: (content type, bytes written). A partial file is
    removed when the fetch fails."""
    limit = max_bytes or settings.fetch_max_bytes
    try:
        if _is_data_uri(url):
            content_type, data = decode_data_uri(url, max_bytes=limit)
            path.write_bytes(data)
            return content_type or "text/plain", len(data)
        return await _to_file(url, path, settings, limit, client)
    except FetchError as exc:
        raise _input_error(exc, field) from None


def load_image(data: bytes, settings: Settings, field: str) -> Image.Image:
    """Decode an input image to RGB, refusing decompression bombs before decoding.

    The pixel count is read from the header first, so a tiny file declaring a huge
    canvas is refused without allocating it. EXIF rotation is applied (what the user
    saw is what the model gets); transparency is flattened onto white.
    """
    try:
        with warnings.catch_warnings():
            # our own limit below replaces PIL's warning; PIL still refuses outright
            # past twice its limit (DecompressionBombError), caught below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > settings.max_image_pixels:
                raise InputFetchFailed(
                    field,
                    f"The image is {width}x{height} = {width * height} pixels, more than the limit of "
                    f"{settings.max_image_pixels}",
                )
            image.load()
    except InputFetchFailed:
        raise
    except Image.DecompressionBombError as exc:
        raise InputFetchFailed(field, f"The image is too large to decode safely: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise InputFetchFailed(
            field, "The file is not an image that can be decoded (accepted: jpeg, png, webp, gif, bmp, tiff)"
        ) from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


async def fetch_image(
    url: str, settings: Settings, *, field: str, client: httpx.AsyncClient | None = None
) -> Image.Image:
    """``fetch_bytes`` then ``load_image``."""
    data = await fetch_bytes(url, settings, field=field, client=client)
    return await asyncio.to_thread(load_image, data, settings, field)


async def fetch_images(
    urls: Sequence[str], settings: Settings, *, field: str, client: httpx.AsyncClient | None = None
) -> list[Image.Image]:
    """``fetch_image`` of each of ``urls`` at once; errors name ``field.<index>``."""
    fetched = await asyncio.gather(*(fetch_image(url, settings, field=f"{field}.{i}", client=client) for i, url in enumerate(urls)))
    return list(fetched)


# -- internals ------------------------------------------------------------------------------


@asynccontextmanager
async def _input(
    url: str, settings: Settings, limit: int, client: httpx.AsyncClient | None
) -> AsyncIterator[httpx.Response]:
    """``opened`` for an input: through ``client`` (else a client of its own, closed after)."""
    own = client is None
    http = client or make_client(settings)
    try:
        async with opened(url, lambda _: http, max_bytes=limit, timeout=settings.fetch_timeout_seconds) as response:
            yield response
    finally:
        if own:
            await http.aclose()


async def _to_file(
    url: str, path: Path, settings: Settings, limit: int, client: httpx.AsyncClient | None
) -> tuple[str | None, int]:
    size = 0
    try:
        async with _input(url, settings, limit, client) as response:
            content_type = response.headers.get("content-type")
            with path.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    _check_size(size, limit, url)
                    out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return content_type, size


@asynccontextmanager
async def _final(url: str, client_for: ClientFor, max_bytes: int, ok: Container[int]) -> AsyncIterator[httpx.Response]:
    """The redirect loop of ``opened``."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        _check_url(current)
        response = await _send(client_for(current), current)
        if response.status_code in _REDIRECTS and "location" in response.headers:
            await response.aclose()
            current = urljoin(current, response.headers["location"])
            continue
        try:
            _check_response(response, current, max_bytes, ok)
            yield response
        finally:
            await response.aclose()
        return
    raise FetchError("redirects", url)


async def _send(http: httpx.AsyncClient, url: str) -> httpx.Response:
    try:
        return await http.send(http.build_request("GET", url), stream=True, follow_redirects=False)
    except AddressRefused as exc:
        raise FetchError("refused", url, cause=exc) from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        # InvalidURL is no HTTPError: httpx raises it for a Location such as data: or mailto:
        raise _transport_error(exc, url) from None


def _transport_error(exc: Exception, url: str) -> FetchError:
    if isinstance(exc, httpx.TimeoutException):
        return FetchError("timeout", url, retryable=True, cause=exc)
    if isinstance(exc, httpx.InvalidURL):
        return FetchError("invalid_url", url, cause=exc)
    return FetchError("failed", url, retryable=True, cause=exc)


def _input_error(exc: FetchError, field: str) -> InputFetchFailed:
    """A failed input fetch in the words of fal's 422 ``file_download_error``."""
    url = _short(exc.url)
    match exc.kind:
        case "scheme":
            message = f"Unsupported URL scheme {urlsplit(exc.url).scheme!r}: use http, https or data"
        case "no_host":
            message = "The URL has no host"
        case "refused":
            message = f"{exc.cause} (private addresses are not fetched)"
        case "timeout":
            message = f"Fetching {url} timed out"
        case "failed" | "invalid_url":
            message = f"Fetching {url} failed: {exc.cause or type(exc.cause).__name__}"
        case "status":
            message = f"Fetching {url} failed: HTTP {exc.status}"
        case "too_large":
            message = f"{'The data URI' if _is_data_uri(exc.url) else url} is larger than the limit of {exc.limit} bytes"
        case "redirects":
            message = f"Fetching {url} was redirected more than {MAX_REDIRECTS} times"
        case "deadline":
            message = f"Fetching {url} took longer than {exc.limit:g} s"
        case "malformed_data":
            message = "Malformed data URI: no ',' separates the header from the data"
        case "bad_base64":
            message = "Malformed data URI: the base64 data does not decode"
    return InputFetchFailed(field, message)


def _is_data_uri(url: str) -> bool:
    return url[:5].lower() == "data:"


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError("scheme", url)
    if not parts.hostname:
        raise FetchError("no_host", url)


def _check_response(response: httpx.Response, url: str, limit: int, ok: Container[int]) -> None:
    code = response.status_code
    if code not in ok:
        raise FetchError("status", url, status=code, retryable=code in {408, 425, 429} or code >= 500)
    declared = response.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise FetchError("too_large", url, limit=limit, size=int(declared))


def _check_size(size: int, limit: int, url: str) -> None:
    if size > limit:
        raise FetchError("too_large", url, limit=limit)


def _short(url: str) -> str:
    return url if len(url) <= 100 else url[:97] + "..."
