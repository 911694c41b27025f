"""fal-client 1.0.3's ``stream`` and ``run(method="GET")``, unchanged, against a real
``openfal serve --demo`` process (tiny random-weight FLUX on the CPU)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import fal_client
import fal_client.client as fal_module
import httpx
import httpx_sse
import pytest

from tests.e2e.conftest import Server

TINY = {"prompt": "a lighthouse", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 3, "seed": 3}


@pytest.fixture
def client(server: Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[fal_client.SyncClient]:
    monkeypatch.setattr(fal_module, "QUEUE_URL_FORMAT", server.url + "/")
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", server.url + "/run/")
    yield fal_client.SyncClient(key=server.key)


def test_stream_of_a_local_image_endpoint_sends_previews_then_the_result(client: fal_client.SyncClient, server: Server) -> None:
    """Progress events carry the step's preview image (a real JPEG on openfal's media);
    the last event is FLUX's full output."""
    events = list(client.stream("fal-ai/flux-1/schnell", TINY))
    final = events[-1]
    assert final["seed"] == 3 and final["prompt"] == "a lighthouse"
    assert final["images"][0]["width"] == 64 and final["images"][0]["url"].startswith(server.url + "/files/")
    partials = events[:-1]
    assert partials and all(p["progress"]["total"] == 3 for p in partials)
    previews = [p["images"][0]["url"] for p in partials if p["images"]]
    assert previews, partials
    preview = httpx.get(previews[0], timeout=10)
    assert preview.status_code == 200 and preview.content[:2] == b"\xff\xd8"


def test_stream_of_a_failing_run_raises_in_the_client(client: fal_client.SyncClient) -> None:
    """A run that fails after events began is not a clean end of stream: the client raises."""
    with pytest.raises(httpx.HTTPError):
        for _ in client.stream("openfal/utils/sleep", {"seconds": 0.3, "steps": 3, "fail_with": "boom"}):
            pass


def test_stream_of_refused_input_is_an_error_not_an_event(client: fal_client.SyncClient) -> None:
    """Refused input is fal's JSON 422, not a stream: fal-client 1.0.3's stream() does not
    check the status and raises httpx-sse's content-type error, as it does against fal."""
    with pytest.raises(httpx_sse.SSEError, match="application/json"):
        list(client.stream("openfal/utils/sleep", {"steps": 0}))


def test_a_client_that_disconnects_cancels_the_streamed_run(server: Server) -> None:
    """Hang up after the first event: the request ends client_cancelled, well before its 20 s."""
    headers = {"Authorization": f"Key {server.key}", "Accept": "text/event-stream"}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", f"{server.url}/run/openfal/utils/sleep/stream", json={"seconds": 20, "steps": 200}, headers=headers) as response:
            request_id = response.headers["x-fal-request-id"]
            next(response.iter_lines())
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = http.get(f"{server.url}/openfal/utils/requests/{request_id}/status", headers=headers)
            if status.status_code == 200:
                break
            time.sleep(0.1)
        assert status.status_code == 200 and status.json()["error_type"] == "client_cancelled"


def test_run_with_get(client: fal_client.SyncClient) -> None:
    """fal-client >= 1.0.2 run(method="GET") sends no body: the endpoint runs with defaults."""
    assert client.run("openfal/utils/sleep", {}, method="GET") == {"slept": 1.0, "steps": 10}


async def test_the_async_client_streams_and_runs_with_get(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """fal_client.AsyncClient: stream() and run(method="GET") as the sync client."""
    monkeypatch.setattr(fal_module, "RUN_URL_FORMAT", server.url + "/run/")
    client = fal_client.AsyncClient(key=server.key)
    events = [event async for event in client.stream("openfal/utils/sleep", {"seconds": 0.2, "steps": 2})]
    assert events[-1] == {"slept": 0.2, "steps": 2} and all("progress" in e for e in events[:-1])
    assert await client.run("openfal/utils/echo", {}, method="GET") == {"echo": {}}
