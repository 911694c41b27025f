"""The official JS client `@fal-ai/client` 1.10.1 from npm, unchanged, against a real
openfal process (URL rewriting through its documented requestMiddleware)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import Server, run_node


@pytest.fixture(scope="module")
def js_results(js_packages: Path, server: Server) -> dict:
    return run_node(js_packages, "client_e2e.mjs", server, timeout=120)


def test_subscribe_in_polling_mode(js_results: dict) -> None:
    """subscribe(mode: polling) returns {data, requestId} after IN_QUEUE/IN_PROGRESS updates."""
    polling = js_results["polling"]
    assert polling["data"] == {"slept": 0.4, "steps": 4}
    assert polling["requestId"]
    assert "IN_PROGRESS" in polling["statuses"] and "COMPLETED" in polling["statuses"]


def test_subscribe_in_streaming_mode_accumulates_logs(js_results: dict) -> None:
    """subscribe(mode: streaming) follows the SSE stream; every step log arrives once."""
    streaming = js_results["streaming"]
    assert streaming["data"] == {"slept": 0.4, "steps": 4}
    assert streaming["logs"] == [f"step {i}/4" for i in range(1, 5)]


def test_queue_calls(js_results: dict) -> None:
    """queue.submit/subscribeToStatus/result work; result carries the x-fal-request-id."""
    assert js_results["queue"] == {"status": "COMPLETED", "data": {"echo": {"n": 7}}, "requestId": True}


def test_cancel(js_results: dict) -> None:
    """queue.cancel stops a running request, which completes with client_cancelled."""
    assert js_results["cancel"] == {"status": "COMPLETED", "error_type": "client_cancelled"}


def test_storage_upload_and_blob_inputs(js_results: dict, server: Server) -> None:
    """storage.upload lands in openfal's media; a Blob inside the input is uploaded and replaced by its URL."""
    storage = js_results["storage"]
    assert storage["url"].startswith(server.url + "/files/")
    assert storage["bytes"] == [137, 80, 78, 71, 1, 2, 3]
    assert storage["autoUploaded"].startswith(server.url + "/files/")


def test_storage_upload_of_a_file_over_90_mb_goes_multipart(js_results: dict, server: Server) -> None:
    """A 91 MB Blob takes the client's multipart path (10 MB parts, unauthenticated PUTs
    to the signed upload URL) and comes back byte for byte from openfal's media."""
    multipart = js_results["multipart"]
    assert multipart["url"].startswith(server.url + "/files/") and multipart["url"].endswith(".mp4")
    assert multipart["size"] == 91 * 1024 * 1024 and multipart["same"] is True


def test_validation_error(js_results: dict) -> None:
    """A 422 at submit becomes the client's ValidationError with field errors."""
    validation = js_results["validation"]
    assert validation["name"] == "ValidationError" and validation["status"] == 422
    assert "body.prompt" in validation["fields"]


def test_run(js_results: dict) -> None:
    """fal.run goes through openfal's synchronous path."""
    assert js_results["run"] == {"echo": {"sync": True}}
