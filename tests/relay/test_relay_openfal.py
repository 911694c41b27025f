"""openfal relaying to a second, real openfal process (auth on, key made by the CLI):
logs, progress, queue position, cancel, errors, media and crash recovery end to end."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.e2e.conftest import Server
from tests.relay.conftest import finish, relay_app, run_relayed, submit, wait_for
from tests.support import wait_status

SLEEP = "/openfal/utils/sleep"
ECHO = "/openfal/utils/echo"


def config(upstream: Server, **extra: Any) -> dict[str, Any]:
    return {"base_url": upstream.url, "keys": [upstream.key], **extra}


def upstream_client(upstream: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=upstream.url, headers={"Authorization": f"Key {upstream.key}"}, timeout=10)


async def upstream_count(upstream: Server) -> int:
    async with upstream_client(upstream) as client:
        return len((await client.get("/api/requests", params={"limit": 500})).json()["items"])


async def upstream_request(record: Any, upstream: Server) -> tuple[dict[str, Any], httpx.Response]:
    """The upstream's own status and result of the request a relayed one became."""
    state = record.backend_state
    async with upstream_client(upstream) as client:
        status = await wait_status(client, state["status_url"], timeout=10)
        return status.json(), await client.get(state["response_url"])


async def test_echo_is_relayed_once_and_hides_the_upstream(tmp_path: Path, upstream: Server) -> None:
    """The result is the upstream's; openfal's answers never mention the upstream; one upstream request."""
    before = await upstream_count(upstream)
    async with relay_app(tmp_path, config(upstream)) as app:
        done = await run_relayed(app, ECHO, {"value": 42, "nested": {"a": [1, 2]}})
        assert done.result.status_code == 200
        assert done.result.json() == {"echo": {"value": 42, "nested": {"a": [1, 2]}}}
        upstream_id = (await done.record()).backend_state["upstream_request_id"]
        for text in (json.dumps(done.submitted), json.dumps(done.status), done.result.text):
            assert upstream.url not in text and upstream_id not in text
    assert await upstream_count(upstream) == before + 1


async def test_logs_and_progress_are_mirrored(tmp_path: Path, upstream: Server) -> None:
    """Each upstream log line arrives once, in order; the upstream's progress is openfal's."""
    async with relay_app(tmp_path, config(upstream)) as app:
        done = await run_relayed(app, SLEEP, {"seconds": 0.6, "steps": 3})
        assert done.result.json() == {"slept": 0.6, "steps": 3}
        assert await done.logs() == ["step 1/3", "step 2/3", "step 3/3"]
        assert done.status["progress"] == {"step": 3, "total": 3}


async def test_upstream_queue_position_is_mirrored(tmp_path: Path, upstream: Server) -> None:
    """Upstream slots busy: the relayed request shows IN_QUEUE with the upstream's queue position.
    The blockers sleep long enough that a relay slowed by a loaded CI machine still forwards
    the request while one blocker waits ahead of it (at 1.5 s it once saw only position 0)."""
    async with upstream_client(upstream) as client, relay_app(tmp_path, config(upstream)) as app:
        blockers = [(await client.post(SLEEP, json={"seconds": 5, "steps": 5})).json() for _ in range(3)]
        auth, submitted = await submit(app, SLEEP, {"seconds": 0.1, "steps": 1})
        seen: list[int] = []

        async def upstream_queued() -> bool:
            body = (await app.client.get(submitted["status_url"], headers=auth)).json()
            if body["status"] == "IN_QUEUE":
                seen.append(body["queue_position"])
            return 1 in seen

        await wait_for(upstream_queued, timeout=10)
        done = await finish(app, auth, submitted)
        assert done.result.json() == {"slept": 0.1, "steps": 1}
        for blocker in blockers:
            await wait_status(client, blocker["status_url"], timeout=20)


async def test_cancel_is_forwarded_and_the_upstream_request_ends_cancelled(tmp_path: Path, upstream: Server) -> None:
    """Cancel at openfal: openfal ends client_cancelled and so does the upstream request."""
    async with relay_app(tmp_path, config(upstream)) as app:
        auth, submitted = await submit(app, SLEEP, {"seconds": 20, "steps": 40})

        async def upstream_running() -> Any:
            record = await app.runtime.requests.get(submitted["request_id"])
            return record.backend_state.get("upstream_request_id") and record

        record = await wait_for(upstream_running)

        async def upstream_in_progress() -> bool:
            async with upstream_client(upstream) as client:
                return (await client.get(record.backend_state["status_url"])).json()["status"] == "IN_PROGRESS"

        await wait_for(upstream_in_progress)
        assert (await app.client.put(submitted["cancel_url"], headers=auth)).status_code == 202
        done = await finish(app, auth, submitted, timeout=10)
        assert done.status["error_type"] == "client_cancelled" and done.result.status_code == 499
        status, result = await upstream_request(record, upstream)
        assert status["error_type"] == "client_cancelled" and result.status_code == 499


async def test_upstream_failure_keeps_its_code_body_and_error_type(tmp_path: Path, upstream: Server) -> None:
    """A request failing upstream fails the same way here: status code, body, error_type."""
    async with relay_app(tmp_path, config(upstream)) as app:
        done = await run_relayed(app, SLEEP, {"seconds": 0.05, "steps": 1, "fail_with": "boom"})
        status, result = await upstream_request(await done.record(), upstream)
        assert done.result.status_code == result.status_code == 500
        assert done.result.json() == result.json()
        assert done.status["error"] == status["error"] == "boom"
        assert done.status["error_type"] == status["error_type"] == "runner_server_error"


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str) -> str:
    """A file in the upstream's media store, through its fal storage API."""
    initiate = await client.post("/storage/upload/initiate", json={"content_type": content_type, "file_name": "in.png"})
    put = await client.put(initiate.json()["upload_url"], content=data, headers={"Content-Type": content_type})
    assert put.status_code == 200
    return initiate.json()["file_url"]


async def test_upstream_media_is_copied_into_openfal(tmp_path: Path, upstream: Server) -> None:
    """A file URL on the upstream comes back as an openfal URL with the same bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buffer, "PNG")
    image = buffer.getvalue()
    async with upstream_client(upstream) as client:
        file_url = await upload(client, image, "image/png")
    assert file_url.startswith(upstream.url)
    async with relay_app(tmp_path, config(upstream)) as app:
        done = await run_relayed(app, ECHO, {"images": [{"url": file_url, "content_type": "image/png"}]})
        copied = done.result.json()["echo"]["images"][0]
        assert copied["url"].startswith("http://openfal.test/files/")
        assert (copied["width"], copied["height"], copied["file_size"], copied["content_type"]) == (16, 12, len(image), "image/png")
        assert (await app.client.get(copied["url"])).content == image
        assert upstream.url not in done.result.text


#: no grace at stop: the running request is handed back to the queue at once (a lease
#: never has to run out, so a loaded machine's slow heartbeat cannot add an attempt)
STOPPED_MID_RUN = {"drain_seconds": 0}


async def test_worker_crash_resumes_the_upstream_request_without_resubmitting(tmp_path: Path, upstream: Server) -> None:
    """The worker stops while following (no grace): the retry follows the same upstream
    request (saved before waiting) and the upstream sees one submit."""
    before = await upstream_count(upstream)
    overrides = STOPPED_MID_RUN
    async with relay_app(tmp_path, config(upstream), **overrides) as app:
        auth, submitted = await submit(app, SLEEP, {"seconds": 2.0, "steps": 4})

        async def followed() -> bool:
            record = await app.runtime.requests.get(submitted["request_id"])
            return bool(record.backend_state.get("upstream_request_id"))

        await wait_for(followed)
    # the app stopped mid-request and gave it back; a new one takes over
    assert (await app.runtime.requests.get(submitted["request_id"])).status.value == "IN_QUEUE"
    async with relay_app(tmp_path, config(upstream), **overrides) as app:
        done = await finish(app, auth, submitted, timeout=20)
        assert done.result.json() == {"slept": 2.0, "steps": 4}
        assert (await done.record()).attempts == 1  # a stopping worker's hand-back is no attempt
    assert await upstream_count(upstream) == before + 1


async def test_crash_before_the_upstream_id_is_saved_does_not_run_it_twice(tmp_path: Path, upstream: Server) -> None:
    """Saving the upstream id fails (the crash window between the upstream accepting and
    openfal recording it), then the worker stops: the retry submits again, and the
    upstream openfal answers with the first request (same Idempotency-Key), so the
    upstream holds one request and the result is its."""
    before = await upstream_count(upstream)
    overrides = STOPPED_MID_RUN
    async with relay_app(tmp_path, config(upstream), **overrides) as app:
        async def lose_the_save(*args: Any, **kwargs: Any) -> None:
            raise RuntimeError("database went away")

        app.runtime.requests.save_backend_state = lose_the_save  # type: ignore[method-assign]
        auth, submitted = await submit(app, SLEEP, {"seconds": 1.5, "steps": 3})
        async def accepted_upstream() -> bool:
            return await upstream_count(upstream) == before + 1

        await wait_for(accepted_upstream, timeout=10)
        assert not (await app.runtime.requests.get(submitted["request_id"])).backend_state
    async with relay_app(tmp_path, config(upstream), **overrides) as app:
        done = await finish(app, auth, submitted, timeout=20)
        assert done.result.json() == {"slept": 1.5, "steps": 3}
        assert (await done.record()).attempts == 1  # a stopping worker's hand-back is no attempt
    assert await upstream_count(upstream) == before + 1


async def test_flux_schnell_image_is_relayed(tmp_path: Path, upstream: Server) -> None:
    """A real (tiny, demo) FLUX image made upstream arrives as an openfal file with the same bytes."""
    async with upstream_client(upstream) as client:
        endpoints = {e["endpoint_id"] for e in (await client.get("/api/endpoints")).json()}
    if "fal-ai/flux-1/schnell" not in endpoints:
        pytest.skip("the upstream does not serve fal-ai/flux-1/schnell (no local backend)")
    async with relay_app(tmp_path, config(upstream), routes={"fal-ai/*": "up"}) as app:
        body = {"prompt": "a red cube", "image_size": {"width": 64, "height": 64}, "num_inference_steps": 1, "seed": 1}
        done = await run_relayed(app, "/fal-ai/flux-1/schnell", body, timeout=120)
        assert done.result.status_code == 200, done.result.text
        image = done.result.json()["images"][0]
        assert image["url"].startswith("http://openfal.test/files/")
        _, result = await upstream_request(await done.record(), upstream)
        original = result.json()["images"][0]
        async with httpx.AsyncClient() as plain:
            upstream_bytes = (await plain.get(original["url"])).content
        assert (await app.client.get(image["url"])).content == upstream_bytes
        assert upstream.url not in done.result.text


async def test_a_flux2_klein_edit_is_relayed_as_sent(tmp_path: Path, upstream: Server) -> None:
    """No local weights here (no local backend): a FLUX.2 [klein] 4B edit routed upstream
    runs there with the fields the client sent, and its image comes back as an openfal file."""
    async with upstream_client(upstream) as client:
        endpoints = {e["endpoint_id"] for e in (await client.get("/api/endpoints")).json()}
    if "fal-ai/flux-2/klein/4b/edit" not in endpoints:
        pytest.skip("the upstream does not serve fal-ai/flux-2/klein/4b/edit (no local backend)")
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (20, 160, 90)).save(buffer, "PNG")
    reference = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    async with relay_app(tmp_path, config(upstream), routes={"fal-ai/*": "up"}) as app:
        body = {"prompt": "make it red", "image_urls": [reference], "seed": 2, "output_format": "webp"}
        done = await run_relayed(app, "/fal-ai/flux-2/klein/4b/edit", body, timeout=180)
        assert done.result.status_code == 200, done.result.text
        image = done.result.json()["images"][0]
        # the reference's size and webp: image_urls and output_format reached the upstream
        assert (image["width"], image["height"], image["content_type"]) == (96, 64, "image/webp")
        assert image["url"].startswith("http://openfal.test/files/")
