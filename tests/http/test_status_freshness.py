"""Status answers served from memory are never older than what this process committed:
a poll right after a change shows it, and a stream of a queued request follows its
position as the requests ahead leave the queue (the SQLite feed is live here, so
followers sleep until woken rather than polling)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.support import App, make_settings, running_app


async def test_a_poll_right_after_a_cancel_shows_it(tmp_path: Path) -> None:
    """The queued status was served (and kept); the cancel this process committed is the
    very next answer, with no wait."""
    async with running_app(make_settings(tmp_path, concurrency={"builtin": 1})) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        running = (await app.client.post("/openfal/utils/sleep", json={"seconds": 30, "steps": 30}, headers=auth)).json()
        queued = (await app.client.post("/openfal/utils/sleep", json={"seconds": 30}, headers=auth)).json()
        assert (await app.client.get(queued["status_url"], headers=auth)).json()["status"] == "IN_QUEUE"
        assert app.runtime.requests.changes_pushed and app.runtime.requests.views.record(queued["request_id"]) is not None
        assert (await app.client.put(queued["cancel_url"], headers=auth)).status_code == 202
        after = await app.client.get(queued["status_url"], headers=auth)
        assert (after.status_code, after.json()["status"], after.json()["error_type"]) == (200, "COMPLETED", "client_cancelled")
        await app.client.put(running["cancel_url"], headers=auth)


async def test_a_stream_of_a_queued_request_follows_its_position_to_completed(tmp_path: Path) -> None:
    """With one slot, the third request's stream says 1, then 0, then runs and completes."""
    async with running_app(make_settings(tmp_path, concurrency={"builtin": 1})) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        first = (await app.client.post("/openfal/utils/sleep", json={"seconds": 0.3, "steps": 3}, headers=auth)).json()
        await wait_for_status(app, first, auth, "IN_PROGRESS")
        for _ in range(2):
            third = (await app.client.post("/openfal/utils/sleep", json={"seconds": 0.2, "steps": 2}, headers=auth)).json()
        events = []
        async with app.client.stream("GET", third["status_url"] + "/stream", headers=auth) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
        positions = [e["queue_position"] for e in events if e["status"] == "IN_QUEUE"]
        assert positions[0] == 1 and positions[-1] == 0
        assert any(e["status"] == "IN_PROGRESS" for e in events) and events[-1]["status"] == "COMPLETED"


async def wait_for_status(app: App, body: dict, auth: dict[str, str], status: str) -> None:
    for _ in range(2000):
        if (await app.client.get(body["status_url"], headers=auth)).json()["status"] == status:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never {status}")
