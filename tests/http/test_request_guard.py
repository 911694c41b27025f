"""Every request's bounds before any route reads it (http/guard.py): the admin API's
caller is checked before its body is read (N13), a body without a Content-Length is
counted as it streams and refused as it passes its route's limit (N2), and the NUL
check holds on the path a proxy-mode call names (N9).

Bodies are async generators, so httpx sends them chunked (no Content-Length) and the
app pulls them one chunk at a time: what a generator yielded is what the server read."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import App, make_settings, running_app

CHUNK = b"x" * 65536


class Endless:
    """A body that never ends by itself, counting what the server pulled of it."""

    def __init__(self, prefix: bytes = b"", limit: int = 4096) -> None:
        self.prefix = prefix
        self.limit = limit
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.prefix:
            yield self.prefix
        while self.sent < self.limit:
            self.sent += 1
            yield CHUNK


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path, max_body_bytes=1024 * 1024)) as running:
        yield running


async def test_an_anonymous_admin_body_is_refused_before_it_is_read(app: App) -> None:
    body = Endless(b'{"name": "')
    response = await app.client.post("/api/admin/keys", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 401
    assert body.sent == 0


async def test_a_customer_keys_admin_body_is_refused_before_it_is_read(app: App) -> None:
    body = Endless(b'{"name": "')
    headers = {"content-type": "application/json", "Authorization": f"Key {await app.key()}"}
    response = await app.client.post("/api/admin/keys", content=body, headers=headers)
    assert response.status_code == 403
    assert body.sent == 0


async def test_an_admin_body_past_its_small_limit_is_a_413_in_fals_shape(app: App) -> None:
    body = Endless(b'{"name": "')
    headers = {"content-type": "application/json", "Authorization": f"Key {await app.key('a', admin=True)}"}
    response = await app.client.post("/api/admin/keys", content=body, headers=headers)
    assert response.status_code == 413
    assert "larger than 65536 bytes" in response.json()["detail"]
    assert body.sent <= 2


async def test_a_declared_length_past_the_limit_is_refused_before_reading(app: App) -> None:
    headers = {"Authorization": f"Key {await app.key()}", "content-length": str(2 * 1024 * 1024)}
    body = Endless()
    response = await app.client.post("/openfal/utils/echo", content=body, headers=headers)
    assert response.status_code == 413
    assert body.sent == 0


async def test_a_chunked_submit_is_cut_off_as_it_passes_the_limit(app: App) -> None:
    body = Endless(b'{"prompt": "')
    response = await app.client.post("/openfal/utils/echo", content=body, headers={"Authorization": f"Key {await app.key()}"})
    assert response.status_code == 413
    assert body.sent == 16  # 1 MiB of 64 KiB chunks, then the one that passed it
    assert await app.runtime.requests.history(None) == []


async def test_a_chunked_openai_edit_is_cut_off_as_it_passes_the_limit(app: App) -> None:
    """N2: text fields (or a file) of a multipart body with no Content-Length were read
    in full (RSS +2.4 GB; a 1 GiB file spooled to disk) before the declared-length check."""
    boundary = "b0undary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode()
    body = Endless(head)
    headers = {"Authorization": f"Bearer {await app.key()}", "content-type": f"multipart/form-data; boundary={boundary}"}
    response = await app.client.post("/v1/images/edits", content=body, headers=headers)
    assert response.status_code == 413
    assert body.sent <= 17
    assert await app.runtime.requests.history(None) == []


async def test_an_upload_may_be_larger_than_an_ordinary_body(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_body_bytes=65536, max_upload_bytes=4 * 65536)
    async with running_app(settings) as app:
        headers = {"Authorization": f"Key {await app.key()}", "content-type": "application/octet-stream"}
        response = await app.client.post("/files/upload", content=Endless(limit=3), headers=headers)
        assert response.status_code == 200, response.text
        too_big = Endless(limit=100)
        response = await app.client.post("/files/upload", content=too_big, headers=headers)
        assert response.status_code == 413
        assert too_big.sent == 5


async def test_a_nul_in_a_proxied_query_is_refused_like_a_direct_one(app: App) -> None:
    """N9: proxy mode rewrote the query after the NUL check had looked at the proxy's own."""
    headers = {"Authorization": f"Key {await app.key('a', admin=True)}", "x-fal-target-url": "https://queue.fal.run/api/requests?endpoint_id=a%00b"}
    response = await app.client.get("/fal/proxy", headers=headers)
    assert response.status_code == 422
    assert "NUL" in response.json()["detail"][0]["msg"]
