"""Output streaming of relayed endpoints: the relay mirrors the upstream's progress, so
a relayed stream is progress events and the result, or the result alone as one event
when the upstream reports none (openfal relaying to a real openfal process)."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Server
from tests.http.test_stream import sse_events
from tests.relay.conftest import relay_app


def config(upstream: Server) -> dict[str, object]:
    return {"base_url": upstream.url, "keys": [upstream.key]}


async def test_a_relayed_endpoint_without_progress_streams_its_result_as_one_event(tmp_path: Path, upstream: Server) -> None:
    async with relay_app(tmp_path, config(upstream)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        response = await app.client.post("/run/openfal/utils/echo/stream", json={"n": 4}, headers=auth)
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert sse_events(response.text) == [("message", {"echo": {"n": 4}})]


async def test_a_relayed_endpoint_streams_the_upstreams_progress_then_the_result(tmp_path: Path, upstream: Server) -> None:
    async with relay_app(tmp_path, config(upstream)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        response = await app.client.post("/run/openfal/utils/sleep/stream", json={"seconds": 0.6, "steps": 3}, headers=auth)
        events = [data for _, data in sse_events(response.text)]
        assert events[-1] == {"slept": 0.6, "steps": 3}
        assert all(set(e) == {"progress"} and e["progress"]["total"] == 3 for e in events[:-1])
