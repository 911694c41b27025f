"""The official Python `fal-client` (1.0.3), unchanged, against a real openfal process.

Plain HTTP needs fal-client's documented module constants pointed at openfal
(fal-queue-api.md 2.4); the TLS test uses only environment variables, in a fresh
interpreter, exactly as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fal_client
import fal_client.client as fal_module
import pytest

from tests.e2e.conftest import Server, self_signed_cert, start_server
from tests.support import ROOT


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[fal_client.SyncClient]:
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", server.url + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", server.url + "/run/")
    yield fal_client.SyncClient(key=server.key)


def test_subscribe_with_logs_and_queue_updates(client: fal_client.SyncClient) -> None:
    """subscribe() polls to COMPLETED, reports InProgress logs through on_queue_update, returns the result."""
    updates: list[object] = []
    result = client.subscribe(
        "openfal/utils/sleep", {"seconds": 0.5, "steps": 5}, with_logs=True, on_queue_update=updates.append
    )
    assert result == {"slept": 0.5, "steps": 5}
    assert any(isinstance(u, fal_client.InProgress) for u in updates)
    logs = [log["message"] for u in updates if isinstance(u, fal_client.InProgress | fal_client.Completed) for log in (u.logs or [])]
    assert "step 1/5" in logs and "step 5/5" in logs


def test_submit_status_result(client: fal_client.SyncClient) -> None:
    """submit() returns a handle whose status(), get() and request_id work."""
    handle = client.submit("openfal/utils/echo", {"value": 42}, priority="low", start_timeout=30)
    status = handle.status(with_logs=True)
    assert isinstance(status, fal_client.Queued | fal_client.InProgress | fal_client.Completed)
    assert handle.get() == {"echo": {"value": 42}}
    assert isinstance(handle.status(), fal_client.Completed)
    assert client.result("openfal/utils/echo", handle.request_id) == {"echo": {"value": 42}}


def test_cancel_through_the_client(client: fal_client.SyncClient) -> None:
    """cancel() on a running request succeeds; the request completes with client_cancelled."""
    handle = client.submit("openfal/utils/sleep", {"seconds": 10, "steps": 100})
    for status in handle.iter_events(interval=0.05):
        if isinstance(status, fal_client.InProgress):
            break
    handle.cancel()
    completed = None
    for status in handle.iter_events(interval=0.05):
        completed = status
    assert isinstance(completed, fal_client.Completed)
    assert completed.error_type == "client_cancelled"
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        handle.cancel()
    assert info.value.status_code == 400


def test_run_is_synchronous(client: fal_client.SyncClient) -> None:
    """run() gets the output in one call through the fal.run path."""
    assert client.run("openfal/utils/echo", {"a": "b"}) == {"echo": {"a": "b"}}


def test_validation_errors_surface_as_fal_http_errors(client: fal_client.SyncClient) -> None:
    """A 422 at submit raises FalClientHTTPError carrying fal's detail list."""
    with pytest.raises(fal_client.FalClientHTTPError) as info:
        client.submit("fal-ai/flux-1/dev", {"num_images": 99})
    assert info.value.status_code == 422


def test_python_client_over_tls_with_environment_only(tmp_path: Path, server: Server) -> None:
    """FAL_QUEUE_RUN_HOST / FAL_RUN_HOST / SSL_CERT_FILE point an unmodified client at openfal over HTTPS."""
    cert, key = self_signed_cert(tmp_path)
    tls = start_server(server.data_dir.parent / (server.data_dir.name + "-tls"), tls=(cert, key), env={"OPENFAL_AUTH_ENABLED": "0"})
    try:
        host = tls.url.removeprefix("https://")
        script = (
            "import fal_client, json\n"
            "r = fal_client.subscribe('openfal/utils/echo', {'tls': True}, with_logs=True)\n"
            "s = fal_client.run('openfal/utils/echo', {'sync': 1})\n"
            "print(json.dumps([r, s]))\n"
        )
        env = {**os.environ, "FAL_KEY": "anything:secret", "FAL_QUEUE_RUN_HOST": host, "FAL_RUN_HOST": host + "/run", "SSL_CERT_FILE": str(cert)}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == [{"echo": {"tls": True}}, {"echo": {"sync": 1}}]
    finally:
        tls.process.stop()


@pytest.fixture
def uploading(client: fal_client.SyncClient, server: Server, monkeypatch: pytest.MonkeyPatch) -> fal_client.SyncClient:
    monkeypatch.setattr(fal_module, "REST_URL", server.url)
    monkeypatch.setattr(fal_module, "CDN_URL", server.url)
    return fal_client.SyncClient(key=server.key)


@pytest.mark.parametrize("repository", ["fal_v3", "fal"])
def test_upload_lands_in_openfal_media(uploading: fal_client.SyncClient, server: Server, repository: str) -> None:
    """upload() through the CDN-token path and the initiate+PUT path returns an openfal
    URL serving the same bytes."""
    import httpx

    data = b"\x89PNG\r\n\x1a\n" + os.urandom(2000)
    url = uploading.upload(data, "image/png", file_name="in.png", repository=repository)
    assert url.startswith(server.url + "/files/")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content == data
    assert fetched.headers["content-type"] == "image/png"


def test_upload_over_the_multipart_threshold_goes_in_parts(
    uploading: fal_client.SyncClient, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client's multipart path (create, concurrent part PUTs answered with an ETag
    header, complete) assembles the file in order. The client's 100 MB threshold and
    10 MB part size are lowered here (module constants it reads at call time) so the
    test moves 1.3 MB in six parts instead of 100 MB; the JS test sends a full-size file."""
    import httpx

    monkeypatch.setattr(fal_module, "MULTIPART_THRESHOLD", 1024 * 1024)
    monkeypatch.setattr(fal_module, "MULTIPART_CHUNK_SIZE", 256 * 1024)
    data = os.urandom(1300 * 1024)
    url = uploading.upload(data, "application/zip", file_name="weights.zip")
    assert url.startswith(server.url + "/files/") and url.endswith("/weights.zip")
    fetched = httpx.get(url)
    assert fetched.status_code == 200 and fetched.content == data


def test_submit_with_webhook_url(client: fal_client.SyncClient) -> None:
    """submit(webhook_url=...) gets fal's webhook payload delivered to the receiver."""
    import time

    from tests.support import Receiver

    receiver = Receiver()
    try:
        handle = client.submit("openfal/utils/echo", {"hook": 1}, webhook_url=receiver.url)
        deadline = time.monotonic() + 20
        while not receiver.received and time.monotonic() < deadline:
            time.sleep(0.05)
        payload = json.loads(receiver.received[0][1])
        assert payload["request_id"] == handle.request_id and payload["status"] == "OK"
        assert payload["payload"] == {"echo": {"hook": 1}}
    finally:
        receiver.close()
