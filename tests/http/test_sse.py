"""The status stream: text/event-stream, a data event per change, closed after COMPLETED."""

from __future__ import annotations

import json

from tests.support import App


async def test_stream_sends_progress_and_closes_after_completed(app: App) -> None:
    """Events arrive as the request moves; the last is COMPLETED and the stream ends."""
    auth = {"Authorization": f"Key {await app.key()}"}
    body = (await app.client.post("/openfal/utils/sleep", json={"seconds": 0.3, "steps": 3}, headers=auth)).json()
    events = []
    async with app.client.stream("GET", body["status_url"] + "/stream?logs=1", headers=auth) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[-1]["status"] == "COMPLETED"
    assert any(e["status"] == "IN_PROGRESS" for e in events)
    logs = [entry["message"] for e in events for entry in (e.get("logs") or [])]
    assert logs == ["step 1/3", "step 2/3", "step 3/3"]  # incremental: each line exactly once


async def test_stream_of_unknown_request_is_404(app: App) -> None:
    """Streaming an unknown id answers 404 before any event."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.get("/openfal/utils/requests/none/status/stream", headers=auth)
    assert response.status_code == 404
