"""Files uploaded to openfal work as inputs without openfal fetching itself over the
network (which the private-address guard refuses)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import httpx
import pytest
from PIL import Image

from openfal.cli import QUIET_LOGGERS, quiet_libraries
from openfal.media.local import LocalMediaStore
from openfal.media.own import OwnMediaTransport, inline_own_media
from openfal.runtime import make_backends
from tests.support import make_settings, running_app, wait_status


def png(width: int = 64, height: int = 48) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_an_uploaded_file_is_a_valid_image_url_with_the_guard_on(tmp_path: Path) -> None:
    """Upload through the storage API, then image-to-image on that URL, private URLs refused."""
    settings = make_settings(tmp_path, demo=True, allow_private_urls=False)
    async with running_app(settings, make_backends(settings)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        ticket = (await app.client.post("/storage/upload/initiate", json={"content_type": "image/png", "file_name": "in.png"}, headers=auth)).json()
        await app.client.put(ticket["upload_url"], content=png(), headers={"Content-Type": "image/png"})
        body = (
            await app.client.post(
                "/fal-ai/flux-1/dev/image-to-image",
                json={"prompt": "x", "image_url": ticket["file_url"], "num_inference_steps": 10, "strength": 0.3},
                headers=auth,
            )
        ).json()
        done = await wait_status(app.client, body["status_url"], auth, timeout=120)
        assert "error" not in done.json(), done.json()
        result = (await app.client.get(body["response_url"], headers=auth)).json()
        assert (result["images"][0]["width"], result["images"][0]["height"]) == (64, 48)


async def test_own_urls_resolve_only_to_valid_keys_that_exist(tmp_path: Path) -> None:
    """Only /files/ paths naming a valid key are ours; traversal and other paths are not,
    and a valid key that was never stored has no size."""
    store = LocalMediaStore(tmp_path)
    key = "A" * 24 + "/in.png"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(png())
    assert store.key_of(f"http://anything:8000/files/{key}") == key
    assert store.key_of("http://x/files/../../etc/passwd") is None
    assert store.key_of(f"http://x/other/{key}") is None
    assert store.key_of(f"file:///files/{key}") is None
    assert await store.size(key) == len(png())
    assert await store.size("B" * 24 + "/gone.png") is None


async def test_relayed_inputs_carry_own_files_as_data_uris(tmp_path: Path) -> None:
    """inline_own_media swaps our URLs (nested too) for data URIs and leaves others alone."""
    store = LocalMediaStore(tmp_path)
    key = "B" * 24 + "/ref.png"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(b"png-bytes")
    out = await inline_own_media({"image_urls": [f"http://h/files/{key}", "https://example.com/a.png"], "n": 1}, store, 1024)
    assert out["image_urls"][0] == "data:image/png;base64,cG5nLWJ5dGVz"
    assert out["image_urls"][1] == "https://example.com/a.png" and out["n"] == 1
    assert await inline_own_media(f"http://h/files/{key}", store, 4) == f"http://h/files/{key}"  # over the size limit


async def test_reading_the_servers_own_files_logs_no_line_per_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """With the server's logging (``openfal`` commands), a read of an own file through the
    guarded client is not an ``httpx: HTTP Request: GET .../files/...`` line."""
    for name in QUIET_LOGGERS:  # restored after the test: the levels are process-wide
        caplog.set_level(logging.getLogger(name).level, logger=name)
    quiet_libraries()
    store = LocalMediaStore(tmp_path)
    key = "C" * 24 + "/in.png"
    (tmp_path / key).parent.mkdir(parents=True)
    (tmp_path / key).write_bytes(png())
    with caplog.at_level(logging.INFO):
        async with httpx.AsyncClient(transport=OwnMediaTransport(httpx.AsyncHTTPTransport(), store)) as client:
            response = await client.get(f"http://openfal.test/files/{key}")
    assert response.status_code == 200 and response.content == png()
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == []
