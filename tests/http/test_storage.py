"""fal's storage API as the JS client uses it: initiate, then a raw PUT without auth."""

from __future__ import annotations

from pathlib import Path

from tests.support import App, make_settings, running_app


async def test_initiate_then_unauthenticated_put_stores_the_file(app: App) -> None:
    """The upload_url needs no Authorization (it is the credential); file_url serves the bytes."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/storage/upload/initiate?storage_type=fal-cdn-v3", json={"content_type": "image/jpeg", "file_name": "a.jpg"}, headers=auth)).json()
    assert (await app.client.put(body["upload_url"], content=b"jpeg-bytes", headers={"Content-Type": "image/jpeg"})).status_code == 200
    fetched = await app.client.get(body["file_url"])
    assert fetched.content == b"jpeg-bytes"


async def test_initiate_needs_a_key(app: App) -> None:
    """Without an API key, initiate and token are 401."""
    assert (await app.client.post("/storage/upload/initiate", json={})).status_code == 401
    assert (await app.client.post("/storage/auth/token", json={})).status_code == 401


async def test_tampered_upload_url_is_refused(app: App) -> None:
    """Changing one character of the ticket makes the PUT 401."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/storage/upload/initiate", json={"content_type": "image/png"}, headers=auth)).json()
    bad = body["upload_url"][:-1] + ("0" if body["upload_url"][-1] != "0" else "1")
    assert (await app.client.put(bad, content=b"x")).status_code == 401


async def test_upload_over_the_limit_is_413(tmp_path: Path) -> None:
    """Files over max_upload_bytes are refused, and multipart initiation says it is unsupported."""
    async with running_app(make_settings(tmp_path, max_upload_bytes=4096)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        token = (await app.client.post("/storage/auth/token", json={}, headers=auth)).json()
        headers = {"Authorization": f"{token['token_type']} {token['token']}", "Content-Type": "image/png"}
        assert (await app.client.post("/files/upload", content=b"x" * 5000, headers=headers)).status_code == 413
        assert (await app.client.post("/files/upload", content=b"x" * 10, headers=headers)).status_code == 200
        assert (await app.client.post("/storage/upload/initiate-multipart", json={}, headers=auth)).status_code == 413
