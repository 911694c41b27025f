"""The README's demo, as a user runs it: ``openfal serve --demo`` and the seed's curl."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Server, start_server
from tests.support import ROOT


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("demo")
    server = start_server(data_dir, "--demo")
    server.key = (data_dir / "demo-key.txt").read_text().strip()
    yield server
    server.process.stop()


def wait_done(client: httpx.Client, status_url: str, headers: dict[str, str], timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(status_url, headers=headers)
        if response.status_code == 200:
            return response.json()
        time.sleep(0.1)
    raise AssertionError("request did not complete")


def test_seed_curl_returns_a_real_image(demo: Server) -> None:
    """Bearer auth, POST /fal-ai/flux-1/dev, then GET /fal-ai/flux-1/requests/{id}: a real JPEG
    of the asked size on openfal's own URL, with seed, timings and has_nsfw_concepts."""
    headers = {"Authorization": f"Bearer {demo.key}"}
    with httpx.Client(timeout=60) as client:
        submitted = client.post(
            f"{demo.url}/fal-ai/flux-1/dev",
            json={"prompt": "a lighthouse at dawn", "image_size": {"width": 200, "height": 136}, "num_inference_steps": 3, "seed": 7},
            headers=headers,
        ).json()
        assert submitted["status"] == "IN_QUEUE"
        status = wait_done(client, submitted["status_url"], headers)
        assert "error" not in status, status
        result = client.get(f"{demo.url}/fal-ai/flux-1/requests/{submitted['request_id']}", headers=headers).json()
        image = result["images"][0]
        assert (image["width"], image["height"]) == (192, 128)  # rounded down to multiples of 16
        assert image["url"].startswith(demo.url + "/files/")
        assert image["content_type"] == "image/jpeg"
        picture = Image.open(io.BytesIO(client.get(image["url"]).content))
        assert picture.format == "JPEG" and picture.size == (192, 128)
        assert result["seed"] == 7 and result["prompt"] == "a lighthouse at dawn"
        assert result["has_nsfw_concepts"] == [False]
        assert result["timings"]["inference"] > 0


def test_sync_mode_returns_a_data_uri(demo: Server) -> None:
    """sync_mode: true inlines the PNG as a data URI instead of a media URL."""
    headers = {"Authorization": f"Key {demo.key}"}
    with httpx.Client(timeout=120) as client:
        result = client.post(
            f"{demo.url}/run/fal-ai/flux-1/schnell",
            json={"prompt": "x", "image_size": "square", "num_inference_steps": 1, "sync_mode": True, "output_format": "png", "num_images": 2},
            headers=headers,
        ).json()
    assert len(result["images"]) == 2
    assert all(i["url"].startswith("data:image/png;base64,") for i in result["images"])
    assert result["has_nsfw_concepts"] == [False, False]


def key_works(url: str, key: str) -> bool:
    """Whether the server accepts ``key`` (a 401 says it does not)."""
    response = httpx.post(f"{url}/openfal/utils/echo", json={}, headers={"Authorization": f"Key {key}"}, timeout=30)
    assert response.status_code in (200, 401), response.text
    return response.status_code == 200


def cli(data_dir: Path, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "openfal", "--data-dir", str(data_dir), *args], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout


def test_demo_key_is_kept_across_restarts_and_remade_once_revoked(tmp_path: Path) -> None:
    """The key ``serve --demo`` prints stays valid across a restart; revoked (with the
    CLI, while the server is down), the next start makes and prints a new one."""
    server = start_server(tmp_path, "--demo")
    first = (tmp_path / "demo-key.txt").read_text().strip()
    try:
        assert key_works(server.url, first)
        assert f"demo API key: {first}" in server.process.tail()
    finally:
        server.process.stop()

    server = start_server(tmp_path, "--demo")
    try:
        assert (tmp_path / "demo-key.txt").read_text().strip() == first
        assert key_works(server.url, first)
    finally:
        server.process.stop()

    [demo_key] = [k for k in json.loads(cli(tmp_path, "keys", "list", "--json")) if k["name"] == "demo"]
    cli(tmp_path, "keys", "revoke", demo_key["id"])

    server = start_server(tmp_path, "--demo")
    try:
        second = (tmp_path / "demo-key.txt").read_text().strip()
        assert second != first
        assert not key_works(server.url, first)
        assert key_works(server.url, second)
        assert f"demo API key: {second}" in server.process.tail()
    finally:
        server.process.stop()
