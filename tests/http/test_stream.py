"""Output streaming (``POST /run/{endpoint}/stream``), ``GET /run/{endpoint}`` and 405s
for methods a route does not take, in process (the official clients drive the same
routes in tests/e2e/test_fal_client_stream.py)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import App, make_settings, running_app, wait_status


def sse_events(text: str) -> list[tuple[str, dict]]:
    """(event name, JSON data) per SSE event; comments skipped."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        if not lines:
            continue
        name = next((line[len("event: ") :] for line in lines if line.startswith("event: ")), "message")
        data = "\n".join(line[len("data: ") :] for line in lines if line.startswith("data: "))
        events.append((name, json.loads(data)))
    return events


async def test_stream_sends_progress_then_the_result(app: App, auth: dict[str, str]) -> None:
    """Progress events while it runs, and last the endpoint's own output."""
    response = await app.client.post("/run/openfal/utils/sleep/stream", json={"seconds": 0.3, "steps": 3}, headers=auth)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in sse_events(response.text)]
    assert events[-1] == {"slept": 0.3, "steps": 3}
    progress = [e["progress"] for e in events[:-1]]
    assert progress and progress == sorted(progress, key=lambda p: p["step"]) and all(p["total"] == 3 for p in progress)


async def test_a_quiet_run_starts_the_stream_with_keep_alives(tmp_path: Path) -> None:
    """Quiet past the keep-alive interval (queued, loading), the response starts with a
    comment, so a client's read timeout does not fire before the first event."""
    async with running_app(make_settings(tmp_path, sse_keepalive_seconds=0.1)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        response = await app.client.post("/run/openfal/utils/sleep/stream", json={"seconds": 0.6, "steps": 1}, headers=auth)
        assert response.status_code == 200
        assert response.text.startswith(": keep-alive\n\n")
        assert sse_events(response.text)[-1][1] == {"slept": 0.6, "steps": 1}


async def test_a_streamed_run_is_a_request_on_the_queue(app: App, auth: dict[str, str]) -> None:
    """It carries x-fal-request-id, and shows in the key's history as completed."""
    response = await app.client.post("/run/openfal/utils/echo/stream", json={"n": 1}, headers=auth)
    events = sse_events(response.text)
    assert events == [("message", {"echo": {"n": 1}})]
    history = (await app.client.get("/api/requests", headers=auth)).json()["items"]
    assert history[0]["request_id"] == response.headers["x-fal-request-id"]
    assert history[0]["status"] == "COMPLETED" and history[0]["endpoint_id"] == "openfal/utils/echo"


async def test_stream_input_errors_are_ordinary_fal_errors(app: App, auth: dict[str, str]) -> None:
    """Refused input is a 422 with a detail list, an unknown endpoint a 404: no stream."""
    invalid = await app.client.post("/run/openfal/utils/sleep/stream", json={"steps": 0}, headers=auth)
    assert invalid.status_code == 422 and invalid.json()["detail"][0]["loc"] == ["body", "steps"]
    unknown = await app.client.post("/run/nobody/nothing/stream", json={}, headers=auth)
    assert unknown.status_code == 404


async def test_stream_needs_a_key(app: App) -> None:
    response = await app.client.post("/run/openfal/utils/echo/stream", json={})
    assert response.status_code == 401


async def test_a_token_from_tokens_authenticates_a_stream(app: App, auth: dict[str, str]) -> None:
    """The JS client's connectionMode "client": ?fal_jwt_token=, no Authorization header."""
    token = (await app.client.post("/tokens/", json={"allowed_apps": ["utils"]}, headers=auth)).json()
    response = await app.client.post(f"/run/openfal/utils/echo/stream?fal_jwt_token={token}", json={"n": 2})
    assert sse_events(response.text) == [("message", {"echo": {"n": 2}})]
    foreign = (await app.client.post("/tokens/", json={"allowed_apps": ["flux-1"]}, headers=auth)).json()
    refused = await app.client.post(f"/run/openfal/utils/echo/stream?fal_jwt_token={foreign}", json={})
    assert refused.status_code == 401
    forged = await app.client.post("/run/openfal/utils/echo/stream?fal_jwt_token=ofrt.x.y", json={})
    assert forged.status_code == 401


async def test_a_token_authenticates_the_status_stream(app: App, auth: dict[str, str]) -> None:
    """The JS client's streamStatus({connectionMode: "client"}): the queue's SSE with a token."""
    submitted = (await app.client.post("/openfal/utils/echo", json={"n": 3}, headers=auth)).json()
    token = (await app.client.post("/tokens/", json={"allowed_apps": ["utils"]}, headers=auth)).json()
    response = await app.client.get(f"{submitted['status_url']}/stream?logs=1&fal_jwt_token={token}")
    assert response.status_code == 200 and sse_events(response.text)[-1][1]["status"] == "COMPLETED"
    assert (await app.client.get(f"{submitted['status_url']}/stream")).status_code == 401
    with_key = await app.client.get(f"{submitted['status_url']}/stream", headers=auth)
    assert sse_events(with_key.text)[-1][1]["status"] == "COMPLETED"


async def test_get_run_takes_its_input_from_the_query(app: App, auth: dict[str, str]) -> None:
    """fal-client's run(method="GET") and the JS client's GET: the query is the input."""
    response = await app.client.get("/run/openfal/utils/echo?a=1&b=x&b=y", headers=auth)
    assert response.status_code == 200
    assert response.json() == {"echo": {"a": "1", "b": ["x", "y"]}}


async def test_get_run_input_is_validated_by_the_schema(app: App, auth: dict[str, str]) -> None:
    """Query strings are coerced by the endpoint's schema, and refused like a body."""
    ok = await app.client.get("/run/openfal/utils/sleep?seconds=0.05&steps=2", headers=auth)
    assert ok.status_code == 200 and ok.json() == {"slept": 0.05, "steps": 2}
    bad = await app.client.get("/run/openfal/utils/sleep?steps=none", headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "steps"]


async def test_methods_a_route_does_not_take_are_405(app: App, auth: dict[str, str]) -> None:
    """Not 404: the path exists, the method does not, and Allow says which do."""
    put_run = await app.client.put("/run/openfal/utils/echo", headers=auth)
    assert put_run.status_code == 405 and put_run.headers["allow"] == "GET, POST"
    get_submit = await app.client.get("/openfal/utils/echo", headers=auth)
    assert get_submit.status_code == 405 and get_submit.headers["allow"] == "POST"
    delete = await app.client.delete("/openfal/utils/echo", headers=auth)
    assert delete.status_code == 405
    submitted = (await app.client.post("/openfal/utils/echo", json={}, headers=auth)).json()
    await wait_status(app.client, submitted["status_url"], auth)
    put_status = await app.client.put(submitted["status_url"], headers=auth)
    assert put_status.status_code == 405 and put_status.headers["allow"] == "GET"
    get_cancel = await app.client.get(submitted["cancel_url"], headers=auth)
    assert get_cancel.status_code == 405 and get_cancel.headers["allow"] == "PUT"


async def test_unknown_paths_stay_404(app: App, auth: dict[str, str]) -> None:
    assert (await app.client.get("/nothing", headers=auth)).status_code == 404
    assert (await app.client.put("/nothing", headers=auth)).status_code == 404
