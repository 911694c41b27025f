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

Every failure is an ``InputFetchFailed(field, message)``: fal's 422 with
``type: file_download_error`` naming the input field.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import socket
import ssl
import warnings
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes, urljoin, urlsplit

import httpcore
import httpx
from PIL import Image, ImageOps, UnidentifiedImageError

from openfal.config import Settings
from openfal.errors import InputFetchFailed
from openfal.media import open_media
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


def make_client(settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The client fetches use: guarded unless private URLs are allowed, and reading our
    own media URLs from the media store. Environment proxies are ignored, since a
    proxy would dial on our behalf, unchecked."""
    if transport is None:
        transport = httpx.AsyncHTTPTransport(trust_env=False) if settings.allow_private_urls else GuardedTransport()
        transport = OwnMediaTransport(transport, lambda: open_media(settings))
    return httpx.AsyncClient(
        transport=transport,
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(settings.fetch_timeout_seconds),
        headers={"User-Agent": "openfal"},
    )


# -- public API -----------------------------------------------------------------------------


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
    if _is_data_uri(url):
        return decode_data_uri(url, field=field, max_bytes=limit)[1]
    buffer = bytearray()
    async with _deadline(url, settings, field), _opened(url, settings, field, limit, client) as response:
        async for chunk in response.aiter_bytes(CHUNK_BYTES):
            buffer += chunk
            _check_size(len(buffer), limit, url, field)
    return bytes(buffer)


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
    if _is_data_uri(url):
        content_type, data = decode_data_uri(url, field=field, max_bytes=limit)
        path.write_bytes(data)
        return content_type, len(data)
    size = 0
    try:
        async with _deadline(url, settings, field), _opened(url, settings, field, limit, client) as response:
            content_type = response.headers.get("content-type")
            with path.open("wb") as out:
                async for chunk in response.aiter_bytes(CHUNK_BYTES):
                    size += len(chunk)
                    _check_size(size, limit, url, field)
                    out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return content_type, size


def decode_data_uri(url: str, *, field: str, max_bytes: int) -> tuple[str, bytes]:
    """(media type, bytes) of a ``data:[<type>][;base64],<data>`` URI."""
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InputFetchFailed(field, "Malformed data URI: no ',' separates the header from the data")
    params = header.split(";")
    media_type = params[0] or "text/plain"
    if "base64" in params[1:]:
        if len(payload) * 3 // 4 > max_bytes + 3:
            raise InputFetchFailed(field, f"The data URI is larger than the limit of {max_bytes} bytes")
        try:
            data = base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError):
            raise InputFetchFailed(field, "Malformed data URI: the base64 data does not decode") from None
    else:
        data = unquote_to_bytes(payload)
    _check_size(len(data), max_bytes, "the data URI", field)
    return media_type, data


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


# -- internals ------------------------------------------------------------------------------


@asynccontextmanager
async def _deadline(url: str, settings: Settings, field: str) -> AsyncIterator[None]:
    """One deadline for the whole fetch; transport errors (also those raised while
    the body streams) become ``InputFetchFailed``."""
    try:
        async with asyncio.timeout(settings.fetch_timeout_seconds):
            yield
    except TimeoutError:
        raise InputFetchFailed(
            field, f"Fetching {_short(url)} took longer than {settings.fetch_timeout_seconds:g} s"
        ) from None
    except httpx.TimeoutException:
        raise InputFetchFailed(field, f"Fetching {_short(url)} timed out") from None
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise InputFetchFailed(field, f"Fetching {_short(url)} failed: {exc or type(exc).__name__}") from None


@asynccontextmanager
async def _opened(
    url: str, settings: Settings, field: str, limit: int, client: httpx.AsyncClient | None
) -> AsyncIterator[httpx.Response]:
    """The final response (redirects followed and re-checked), status 2xx, headers read."""
    own = client is None
    http = client or make_client(settings)
    try:
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            _check_scheme(current, field)
            try:
                request = http.build_request("GET", current)
                response = await http.send(request, stream=True, follow_redirects=False)
            except AddressRefused as exc:
                raise InputFetchFailed(field, f"{exc} (private addresses are not fetched)") from None
            except httpx.TimeoutException:
                raise InputFetchFailed(field, f"Fetching {_short(current)} timed out") from None
            except (httpx.HTTPError, httpx.InvalidURL) as exc:
                # InvalidURL is no HTTPError: httpx raises it for a Location such as data: or mailto:
                raise InputFetchFailed(field, f"Fetching {_short(current)} failed: {exc or type(exc).__name__}") from None
            if response.status_code in _REDIRECTS and "location" in response.headers:
                await response.aclose()
                current = urljoin(current, response.headers["location"])
                continue
            try:
                _check_response(response, current, limit, field)
                yield response
            finally:
                await response.aclose()
            return
        raise InputFetchFailed(field, f"Fetching {_short(url)} was redirected more than {MAX_REDIRECTS} times")
    finally:
        if own:
            await http.aclose()


def _is_data_uri(url: str) -> bool:
    return url[:5].lower() == "data:"


def _check_scheme(url: str, field: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise InputFetchFailed(field, f"Unsupported URL scheme {parts.scheme!r}: use http, https or data")
    if not parts.hostname:
        raise InputFetchFailed(field, "The URL has no host")


def _check_response(response: httpx.Response, url: str, limit: int, field: str) -> None:
    if not 200 <= response.status_code < 300:
        raise InputFetchFailed(field, f"Fetching {_short(url)} failed: HTTP {response.status_code}")
    declared = response.headers.get("content-length")
    if declared and declared.isdigit():
        _check_size(int(declared), limit, _short(url), field)


def _check_size(size: int, limit: int, what: str, field: str) -> None:
    if size > limit:
        raise InputFetchFailed(field, f"{_short(what)} is larger than the limit of {limit} bytes")


def _short(url: str) -> str:
    return url if len(url) <= 100 else url[:97] + "..."
