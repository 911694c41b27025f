"""The official JS client `@fal-ai/client` 1.10.1, unchanged, for the calls
tests/e2e/test_js_client.py does not make: ``fal.stream``, GET runs and proxy mode
(``proxyUrl`` pointed at openfal's ``/fal/proxy``, no request middleware)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Server, run_node


@pytest.fixture(scope="module")
def js(js_packages: Path, server: Server) -> dict:
    return run_node(js_packages, "stream_proxy_e2e.mjs", server)


def test_stream_of_a_local_image_endpoint(js: dict, server: Server) -> None:
    """fal.stream yields progress events with preview images; done() is FLUX's full output."""
    stream = js["stream"]
    assert stream["requestId"] is True
    assert stream["done"] == stream["events"][-1]
    assert stream["done"]["seed"] == 5 and stream["done"]["images"][0]["width"] == 64
    partials = stream["events"][:-1]
    assert partials and all(p["progress"]["total"] == 3 for p in partials)
    assert any(p["images"] and p["images"][0]["url"].startswith(server.url + "/files/") for p in partials)


def test_stream_of_refused_input_is_a_validation_error(js: dict) -> None:
    assert js["streamError"]["error"]["name"] == "ValidationError"
    assert js["streamError"]["error"]["fields"] == ["body.steps"]


def test_stream_of_a_run_failing_midway_rejects(js: dict) -> None:
    """An aborted stream, not a clean end: done() rejects instead of resolving with a partial."""
    assert js["streamFailure"]["error"]["name"] == "ApiError"


def test_stream_in_client_mode_uses_a_token(js: dict) -> None:
    """connectionMode "client": /tokens/ then the stream with ?fal_jwt_token= and no key."""
    assert js["clientMode"] == {"ok": {"slept": 0.2, "steps": 2}}


def test_status_stream_in_client_mode_uses_a_token(js: dict) -> None:
    """queue.streamStatus({connectionMode: "client"}) follows the queue's SSE with a token."""
    assert js["statusClientMode"] == {"ok": "COMPLETED"}


def test_run_with_get_sends_the_input_in_the_query(js: dict) -> None:
    assert js["runGet"] == {"echo": {"a": "1"}}


def test_proxy_mode_serves_every_call(js: dict, server: Server) -> None:
    """subscribe (polling and streaming), queue.*, storage.upload, run and stream through
    /fal/proxy, with x-fal-target-url naming fal's hosts."""
    proxy = js["proxy"]
    assert proxy["polling"] == {"slept": 0.2, "steps": 2}
    assert proxy["streaming"] == {"data": {"slept": 0.2, "steps": 2}, "logs": ["step 1/2", "step 2/2"]}
    assert proxy["queue"] == {"echo": {"n": 3}}
    assert proxy["upload"].startswith(server.url + "/files/") and proxy["uploadBytes"] == [1, 2, 3]
    assert proxy["run"] == {"echo": {"proxied": True}}
    assert proxy["stream"]["done"] == {"slept": 0.2, "steps": 2}


def test_proxy_mode_keeps_validation_errors(js: dict) -> None:
    assert js["proxy"]["validation"]["error"]["name"] == "ValidationError"
    assert "body.prompt" in js["proxy"]["validation"]["error"]["fields"]


@pytest.fixture(scope="module", params=["", "/run"], ids=["at-the-root", "under-run"])
def js_realtime(request: pytest.FixtureRequest, js_packages: Path, server: Server) -> dict:
    """realtime_e2e.mjs, with ``wss://fal.run/`` sent to openfal's root (DNS pointing fal.run
    at openfal) and to ``/run/`` (a reverse proxy mapping fal.run onto that prefix). Node
    before 22 needs --experimental-websocket for the WebSocket global."""
    major = int(subprocess.run(["node", "--version"], capture_output=True, text=True, check=True).stdout.strip().lstrip("v").split(".")[0])
    flags = ["--experimental-websocket"] if major < 22 else []
    return run_node(js_packages, "realtime_e2e.mjs", server, *flags, OPENFAL_REALTIME_PREFIX=request.param)


def test_realtime_connect_answers_each_message(js_realtime: dict, server: Server) -> None:
    """fal.realtime.connect: a token from /tokens/, msgpack frames, one onResult per send."""
    flux = js_realtime["flux"]
    assert flux["errors"] == []
    assert [r["seed"] for r in flux["results"]] == [1, 2]
    assert flux["results"][0]["images"][0]["url"].startswith(server.url + "/files/")


def test_realtime_errors_reach_on_error_and_the_connection_lives_on(js_realtime: dict) -> None:
    invalid = js_realtime["invalid"]
    assert invalid["errors"][0]["body"]["type"] == "x-fal-error" and invalid["errors"][0]["body"]["error"] == "VALIDATION_ERROR"
    assert invalid["results"] == [{"slept": 0.0, "steps": 1}]


@pytest.fixture(scope="module")
def js_openai(js_packages: Path, server: Server) -> dict:
    return run_node(js_packages, "openai_e2e.mjs", server)


def test_openai_npm_package_generates_and_edits(js_openai: dict, server: Server) -> None:
    """The official `openai` npm package: images.generate (b64_json), images.edit
    (multipart onto image-to-image), models.list, and errors as its BadRequestError."""
    assert js_openai["generate"] == {"count": 1, "jpeg": True, "created": True}
    assert js_openai["edit"]["url"].startswith(server.url + "/files/")
    assert js_openai["error"] == {"name": "BadRequestError", "status": 400, "param": "n", "type": "invalid_request_error"}
    assert "dall-e-3" in js_openai["models"] and "fal-ai/flux-1/schnell" in js_openai["models"]
