"""Guarded fetching of user-given URLs (openfal.fetch), against a real HTTP server on
loopback. Fetches that should work run with ``allow_private_urls=True`` (the server is
on 127.0.0.1); the refusals run with it False, through the real guarded transport."""

from __future__ import annotations

import base64
import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from openfal.config import Settings
from openfal.errors import InputFetchFailed
from openfal.fetch import GuardedTransport, fetch_bytes, fetch_image, fetch_to_file, load_image
from openfal.netguard import is_public_address

PNG = io.BytesIO()
Image.new("RGB", (32, 24), (10, 200, 10)).save(PNG, "PNG")
PNG_BYTES = PNG.getvalue()


class _Handler(BaseHTTPRequestHandler):
    """Routes: /image.png, /big-declared, /big-streamed, /slow, /redirect?to=URL,
    /loop/N, /missing, /text."""

    def log_message(self, *args: Any) -> None:
        return None

    def do_GET(self) -> None:  # noqa: N802
        # fetches that refuse a body (too big, too slow) hang up mid-answer; that is the
        # point of those routes, not an error to print (into whatever stderr is then)
        try:
            self._route(self.path)
        except (BrokenPipeError, ConnectionResetError):
            return

    def _route(self, path: str) -> None:
        if path == "/image.png":
            self._send(200, PNG_BYTES, "image/png")
        elif path == "/text":
            self._send(200, b"hello, not an image", "text/plain")
        elif path == "/big-declared":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"x" * 1024)
        elif path == "/big-streamed":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for _ in range(200):
                chunk = b"y" * 16384
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif path == "/slow":
            time.sleep(3)
            self._send(200, PNG_BYTES, "image/png")
        elif path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path.startswith("/loop/"):
            n = int(path.rsplit("/", 1)[1])
            self.send_response(302)
            self.send_header("Location", f"/loop/{n + 1}")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1; its base URL."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path, "allow_private_urls": True, "fetch_max_bytes": 64 * 1024}
    return Settings(**{**values, **overrides})


# -- what works --------------------------------------------------------------------------


async def test_fetches_an_image_over_http(server: str, tmp_path: Path) -> None:
    """A plain http URL is fetched and decoded (private URLs allowed: loopback server)."""
    image = await fetch_image(f"{server}/image.png", settings(tmp_path), field="image_url")
    assert image.size == (32, 24) and image.mode == "RGB"


async def test_follows_a_redirect_to_an_allowed_host(server: str, tmp_path: Path) -> None:
    """Redirects are followed by hand to the final body."""
    data = await fetch_bytes(f"{server}/redirect?to=/image.png", settings(tmp_path), field="image_url")
    assert data == PNG_BYTES


async def test_accepts_base64_data_uris(tmp_path: Path) -> None:
    """data: URIs decode without any connection."""
    uri = "data:image/png;base64," + base64.b64encode(PNG_BYTES).decode()
    assert await fetch_bytes(uri, settings(tmp_path, allow_private_urls=False), field="image_url") == PNG_BYTES


async def test_accepts_percent_encoded_data_uris(tmp_path: Path) -> None:
    """Non-base64 data: URIs are percent-decoded."""
    assert await fetch_bytes("data:text/plain,a%20b", settings(tmp_path), field="x") == b"a b"


async def test_fetch_to_file_streams_into_the_file(server: str, tmp_path: Path) -> None:
    """fetch_to_file writes the body and reports content type and size."""
    target = tmp_path / "out.png"
    content_type, size = await fetch_to_file(f"{server}/image.png", target, settings(tmp_path))
    assert (content_type, size) == ("image/png", len(PNG_BYTES))
    assert target.read_bytes() == PNG_BYTES


# -- private addresses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/image.png",
        "http://10.1.2.3/image.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/x",
        "http://224.0.0.1/x",
        "http://localhost/x",
    ],
)
async def test_refuses_private_addresses(url: str, tmp_path: Path) -> None:
    """Loopback, RFC 1918, link-local (cloud metadata), multicast and names resolving to
    them are refused before any connection is made."""
    with pytest.raises(InputFetchFailed) as caught:
        await fetch_bytes(url, settings(tmp_path, allow_private_urls=False), field="image_url")
    assert "non-public address" in caught.value.message
    assert caught.value.body()["detail"][0]["loc"] == ["body", "image_url"]


async def test_refuses_the_loopback_server_itself(server: str, tmp_path: Path) -> None:
    """The real server on 127.0.0.1 is unreachable once private URLs are not allowed."""
    with pytest.raises(InputFetchFailed, match="non-public address"):
        await fetch_bytes(f"{server}/image.png", settings(tmp_path, allow_private_urls=False), field="image_url")


async def test_refuses_a_redirect_to_a_private_address(server: str, tmp_path: Path) -> None:
    """Every redirect hop is checked where it connects. The first hop goes to
    ``localhost``, which a test policy treats as if it were a public host (there is no
    public server to start from offline); the redirect then points at 127.0.0.1, which
    the same policy judges with the real public-address rule, and is refused."""
    port = server.rsplit(":", 1)[1]

    def policy(host: str, address: str) -> bool:
        return host == "localhost" or is_public_address(address)

    client = httpx.AsyncClient(transport=GuardedTransport(policy=policy))
    start = f"http://localhost:{port}/redirect?to=http://127.0.0.1:{port}/image.png"
    async with client:
        assert await fetch_bytes(f"http://localhost:{port}/image.png", settings(tmp_path), field="f", client=client)
        with pytest.raises(InputFetchFailed, match="127.0.0.1"):
            await fetch_bytes(start, settings(tmp_path), field="image_url", client=client)


async def test_refuses_unsupported_schemes(tmp_path: Path) -> None:
    """Only http, https and data URLs are fetched."""
    for url in ("file:///etc/passwd", "ftp://example.com/x", "gopher://x/"):
        with pytest.raises(InputFetchFailed, match="scheme"):
            await fetch_bytes(url, settings(tmp_path), field="image_url")


@pytest.mark.parametrize("location", ["data:image/png;base64,AAAA", "mailto:a@example.com", "javascript:alert(1)"])
async def test_a_redirect_to_a_non_http_url_is_a_fetch_failure(server: str, tmp_path: Path, location: str) -> None:
    """httpx raises InvalidURL (no HTTPError) for such a Location: it must still end as a
    clear input error (a 422 for the request), not escape as a crash."""
    with pytest.raises(InputFetchFailed, match="failed"):
        await fetch_bytes(f"{server}/redirect?to={location}", settings(tmp_path), field="image_url")


async def test_stops_after_five_redirects(server: str, tmp_path: Path) -> None:
    """A redirect loop ends with a clear error after MAX_REDIRECTS hops."""
    with pytest.raises(InputFetchFailed, match="redirected more than 5 times"):
        await fetch_bytes(f"{server}/loop/0", settings(tmp_path), field="image_url")


# -- limits -------------------------------------------------------------------------------------


async def test_refuses_a_declared_size_over_the_limit(server: str, tmp_path: Path) -> None:
    """A Content-Length over fetch_max_bytes is refused before reading the body."""
    with pytest.raises(InputFetchFailed, match="larger than the limit of 65536 bytes"):
        await fetch_bytes(f"{server}/big-declared", settings(tmp_path), field="image_url")


async def test_aborts_a_streamed_body_over_the_limit(server: str, tmp_path: Path) -> None:
    """A chunked body with no length is cut off once it passes the limit."""
    with pytest.raises(InputFetchFailed, match="larger than the limit"):
        await fetch_bytes(f"{server}/big-streamed", settings(tmp_path), field="image_url")


async def test_fetch_to_file_removes_the_partial_file(server: str, tmp_path: Path) -> None:
    """A streamed download that fails leaves no partial file behind."""
    target = tmp_path / "partial.bin"
    with pytest.raises(InputFetchFailed):
        await fetch_to_file(f"{server}/big-streamed", target, settings(tmp_path))
    assert not target.exists()


async def test_refuses_a_data_uri_over_the_limit(tmp_path: Path) -> None:
    """The size limit applies to data URIs too."""
    uri = "data:application/octet-stream;base64," + base64.b64encode(b"z" * 100_000).decode()
    with pytest.raises(InputFetchFailed, match="larger than the limit"):
        await fetch_bytes(uri, settings(tmp_path), field="image_url")


async def test_gives_up_at_the_time_limit(server: str, tmp_path: Path) -> None:
    """A server slower than fetch_timeout_seconds fails the fetch at the deadline (had it
    waited, /slow would have answered with an image after 3 s and the fetch succeeded)."""
    with pytest.raises(InputFetchFailed, match="took longer than 0.5 s|timed out"):
        await fetch_bytes(f"{server}/slow", settings(tmp_path, fetch_timeout_seconds=0.5), field="image_url")


async def test_reports_http_errors(server: str, tmp_path: Path) -> None:
    """A non-2xx answer names the status."""
    with pytest.raises(InputFetchFailed, match="HTTP 404"):
        await fetch_bytes(f"{server}/missing", settings(tmp_path), field="image_url")


# -- decoding ------------------------------------------------------------------------------------


async def test_rejects_a_file_that_is_not_an_image(server: str, tmp_path: Path) -> None:
    """Text served as the image is a clear 'not an image' error on the field."""
    with pytest.raises(InputFetchFailed, match="not an image") as caught:
        await fetch_image(f"{server}/text", settings(tmp_path), field="image_urls.1")
    assert caught.value.field == "image_urls.1"


def _png_header_only(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header is rewritten to declare width x height (the pixel
    data stays one pixel: decoding would be a bomb, opening is not)."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_refuses_a_decompression_bomb_from_its_header(tmp_path: Path) -> None:
    """A 9000x9000 PNG header (81 megapixels in ~70 bytes) is refused by the configured
    limit (64 MP by default) before any pixel is decoded (the file has no pixel data: a
    decode would fail with a different error)."""
    with pytest.raises(InputFetchFailed, match="9000x9000 = 81000000 pixels, more than the limit"):
        load_image(_png_header_only(9000, 9000), settings(tmp_path), "image_url")


def test_refuses_a_gigapixel_bomb(tmp_path: Path) -> None:
    """A 10-gigapixel header is refused too, even with the configured limit raised."""
    with pytest.raises(InputFetchFailed, match="too large to decode safely"):
        load_image(_png_header_only(100_000, 100_000), settings(tmp_path, max_image_pixels=2**40), "image_url")


def test_enforces_the_configured_pixel_limit(tmp_path: Path) -> None:
    """max_image_pixels bounds real images too."""
    with pytest.raises(InputFetchFailed, match="more than the limit of 500"):
        load_image(PNG_BYTES, settings(tmp_path, max_image_pixels=500), "image_url")


def test_flattens_transparency_onto_white(tmp_path: Path) -> None:
    """A fully transparent RGBA image decodes to white RGB, not black."""
    buffer = io.BytesIO()
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(buffer, "PNG")
    image = load_image(buffer.getvalue(), settings(tmp_path), "image_url")
    assert image.mode == "RGB" and image.getpixel((0, 0)) == (255, 255, 255)
