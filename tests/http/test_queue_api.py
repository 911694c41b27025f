"""The queue API's wire contract (fal-queue-api.md sections 1.3-1.7), in process."""

from __future__ import annotations

import asyncio

import pytest

from tests.support import App, wait_status

ECHO = "/openfal/utils/echo"
SLEEP = "/openfal/utils/sleep"


async def submit(app: App, auth: dict[str, str], path: str = ECHO, body: object = None, headers: dict[str, str] | None = None) -> dict:
    response = await app.client.post(path, json={"x": 1} if body is None else body, headers=headers or auth)
    assert response.status_code == 200, response.text
    return response.json()


async def running(app: App, auth: dict[str, str], bodies: list[dict], timeout: float = 20.0) -> None:
    """Wait until every one of the submitted requests has been claimed."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        statuses = [(await app.client.get(b["status_url"], headers=auth)).json()["status"] for b in bodies]
        if "IN_QUEUE" not in statuses:
            return
        assert asyncio.get_running_loop().time() < deadline, "the blockers were never all claimed"
        await asyncio.sleep(0.02)


async def test_submit_answers_in_queue_with_absolute_urls(app: App, auth: dict[str, str]) -> None:
    """Submit returns IN_QUEUE, a request id and absolute status/response/cancel URLs on the app."""
    body = await submit(app, auth)
    rid = body["request_id"]
    assert body["status"] == "IN_QUEUE"
    assert body["queue_position"] >= 0
    assert body["status_url"] == f"http://openfal.test/openfal/utils/requests/{rid}/status"
    assert body["response_url"] == f"http://openfal.test/openfal/utils/requests/{rid}"
    assert body["cancel_url"] == f"http://openfal.test/openfal/utils/requests/{rid}/cancel"


async def test_status_is_202_until_completed_then_200(app: App, auth: dict[str, str]) -> None:
    """Status answers 202 while pending and 200 with metrics once COMPLETED."""
    body = await submit(app, auth, SLEEP, {"seconds": 0.3, "steps": 3})
    first = await app.client.get(body["status_url"], headers=auth)
    assert first.status_code == 202
    assert first.json()["status"] in {"IN_QUEUE", "IN_PROGRESS"}
    done = await wait_status(app.client, body["status_url"], auth)
    assert done.status_code == 200
    assert done.json()["status"] == "COMPLETED"
    assert done.json()["logs"] is None
    assert done.json()["metrics"]["inference_time"] > 0


@pytest.mark.parametrize("value", ["1", "true", "True"])
async def test_logs_parameter_accepts_every_client_spelling(app: App, auth: dict[str, str], value: str) -> None:
    """logs=1 (JS), logs=true (Python) and logs=True all include the log list."""
    body = await submit(app, auth, SLEEP, {"seconds": 0.05, "steps": 2})
    await wait_status(app.client, body["status_url"], auth)
    response = await app.client.get(body["status_url"], params={"logs": value}, headers=auth)
    messages = [entry["message"] for entry in response.json()["logs"]]
    assert messages == ["step 1/2", "step 2/2"]
    assert response.json()["logs"][0]["labels"] == {"level": "INFO", "source": "USER"}


@pytest.mark.parametrize("value", ["0", "false"])
async def test_logs_off_gives_null_logs_key(app: App, auth: dict[str, str], value: str) -> None:
    """With logs off the logs key is still present, as null (Python indexes it)."""
    body = await submit(app, auth)
    await wait_status(app.client, body["status_url"], auth)
    response = await app.client.get(body["status_url"], params={"logs": value}, headers=auth)
    assert "logs" in response.json() and response.json()["logs"] is None


async def test_request_is_found_under_its_app_whatever_the_subpath(app: App, auth: dict[str, str]) -> None:
    """A request submitted to owner/app/sub is read at owner/app/requests/{id}; other apps 404."""
    body = await submit(app, auth)
    rid = body["request_id"]
    await wait_status(app.client, body["status_url"], auth)
    assert (await app.client.get(f"/openfal/utils/requests/{rid}", headers=auth)).json() == {"echo": {"x": 1}}
    assert (await app.client.get(f"/fal-ai/flux-1/requests/{rid}", headers=auth)).status_code == 404


async def test_the_full_endpoint_id_in_a_request_url_answers_as_the_app_does(app: App, auth: dict[str, str]) -> None:
    """A reader who builds the URL from the id they submitted to (``owner/app/sub/requests/{id}``)
    gets the status, the status stream, the result and the cancel the app's URLs give."""
    body = await submit(app, auth)
    rid = body["request_id"]
    full = f"{ECHO}/requests/{rid}"
    assert (await wait_status(app.client, f"{full}/status", auth)).json()["status"] == "COMPLETED"
    assert (await app.client.get(full, headers=auth)).json() == {"echo": {"x": 1}}
    async with app.client.stream("GET", f"{full}/status/stream", headers=auth) as stream:
        assert stream.status_code == 200 and b"COMPLETED" in await stream.aread()
    cancel = await app.client.put(f"{full}/cancel", headers=auth)
    assert (cancel.status_code, cancel.json()["status"]) == (400, "ALREADY_COMPLETED")


async def test_trailing_slashes_are_tolerated(app: App, auth: dict[str, str]) -> None:
    """The fal SDK's /status/ and /requests/{id}/ forms work."""
    body = await submit(app, auth)
    await wait_status(app.client, body["status_url"], auth)
    assert (await app.client.get(body["status_url"] + "/", headers=auth)).status_code == 200
    assert (await app.client.get(body["response_url"] + "/", headers=auth)).json() == {"echo": {"x": 1}}


async def test_result_while_pending_is_a_clear_400(app: App, auth: dict[str, str]) -> None:
    """Asking for the result before COMPLETED answers 400 'Request is still in progress'."""
    body = await submit(app, auth, SLEEP, {"seconds": 2, "steps": 2})
    response = await app.client.get(body["response_url"], headers=auth)
    assert response.status_code == 400
    assert response.json() == {"detail": "Request is still in progress.", "error_type": "bad_request"}


async def test_cancel_of_a_running_request_is_202_then_completed_with_499(app: App, auth: dict[str, str]) -> None:
    """Cancel answers 202 CANCELLATION_REQUESTED; the request ends COMPLETED with client_cancelled."""
    body = await submit(app, auth, SLEEP, {"seconds": 5, "steps": 50})
    while (await app.client.get(body["status_url"], headers=auth)).json()["status"] != "IN_PROGRESS":
        await asyncio.sleep(0.02)
    response = await app.client.put(body["cancel_url"], headers=auth)
    assert (response.status_code, response.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    done = await wait_status(app.client, body["status_url"], auth, timeout=3)
    assert done.json()["error_type"] == "client_cancelled"
    result = await app.client.get(body["response_url"], headers=auth)
    assert result.status_code == 499


async def test_cancel_of_a_queued_request_means_it_never_runs(app: App, auth: dict[str, str], tmp_path) -> None:
    """A queued request that is cancelled completes at once and is never claimed."""
    blockers = [await submit(app, auth, SLEEP, {"seconds": 1, "steps": 2}) for _ in range(8)]
    queued = await submit(app, auth, SLEEP, {"seconds": 0.01, "steps": 1})
    assert queued["queue_position"] >= 0
    response = await app.client.put(queued["cancel_url"], headers=auth)
    assert response.status_code == 202
    record = await app.runtime.requests.get(queued["request_id"])
    assert record is not None and record.status.value == "COMPLETED" and record.attempts == 0
    for b in blockers:
        await app.client.put(b["cancel_url"], headers=auth)


async def test_cancel_after_completion_is_400_already_completed(app: App, auth: dict[str, str]) -> None:
    """Cancelling a finished request answers 400 ALREADY_COMPLETED."""
    body = await submit(app, auth)
    await wait_status(app.client, body["status_url"], auth)
    response = await app.client.put(body["cancel_url"], headers=auth)
    assert (response.status_code, response.json()) == (400, {"status": "ALREADY_COMPLETED", "error_type": "bad_request"})


async def test_cancel_of_an_unknown_request_is_404_not_found(app: App, auth: dict[str, str]) -> None:
    """Cancelling an id that does not exist answers 404 NOT_FOUND."""
    response = await app.client.put("/openfal/utils/requests/nope/cancel", headers=auth)
    assert (response.status_code, response.json()) == (404, {"status": "NOT_FOUND", "error_type": "bad_request"})


async def test_every_response_carries_x_fal_request_id(app: App, auth: dict[str, str]) -> None:
    """Submit, status, result, errors and 404s all carry x-fal-request-id; request routes carry the request's."""
    body = await submit(app, auth)
    rid = body["request_id"]
    status = await app.client.get(body["status_url"], headers=auth)
    assert status.headers["x-fal-request-id"] == rid
    for response in [
        await app.client.get("/no/such/path", headers=auth),
        await app.client.post(ECHO, content=b"{", headers=auth),
        await app.client.get("/health"),
    ]:
        assert response.headers.get("x-fal-request-id")


async def test_failed_request_returns_its_stored_error_status_and_body(app: App, auth: dict[str, str]) -> None:
    """A request that fails is COMPLETED with error/error_type, and its result is the error."""
    body = await submit(app, auth, SLEEP, {"seconds": 0, "steps": 1, "fail_with": "boom"})
    done = await wait_status(app.client, body["status_url"], auth)
    assert done.json()["error"] == "boom"
    assert done.json()["error_type"] == "runner_server_error"
    result = await app.client.get(body["response_url"], headers=auth)
    assert result.status_code == 500
    assert result.json()["detail"] == "boom"
    assert result.headers["x-fal-error-type"] == "runner_server_error"


async def test_low_priority_waits_behind_normal(app: App, auth: dict[str, str]) -> None:
    """With workers busy, a later normal request is claimed before an earlier low one."""
    slots = app.runtime.settings.concurrency["builtin"]
    blockers = [await submit(app, auth, SLEEP, {"seconds": 1.5, "steps": 3}) for _ in range(slots)]
    await running(app, auth, blockers)  # else an unclaimed blocker is ahead of low too
    low = await submit(app, auth, SLEEP, {"seconds": 0, "steps": 1}, headers={**auth, "X-Fal-Queue-Priority": "low"})
    normal = await submit(app, auth, SLEEP, {"seconds": 0, "steps": 1})
    low_status = (await app.client.get(low["status_url"], headers=auth)).json()
    assert low_status["status"] == "IN_QUEUE"
    assert low_status["queue_position"] == 1  # the normal one is ahead of it
    await wait_status(app.client, low["status_url"], auth)
    low_record = await app.runtime.requests.get(low["request_id"])
    normal_record = await app.runtime.requests.get(normal["request_id"])
    assert normal_record.started_at <= low_record.started_at
    for b in blockers:
        await wait_status(app.client, b["status_url"], auth)


async def test_start_timeout_expiry_is_504_with_user_timeout_type(app: App, auth: dict[str, str]) -> None:
    """A request not started before X-Fal-Request-Timeout completes with 504 request_timeout."""
    slots = app.runtime.settings.concurrency["builtin"]
    blockers = [await submit(app, auth, SLEEP, {"seconds": 2.5, "steps": 5}) for _ in range(slots)]
    late = await submit(app, auth, SLEEP, {"seconds": 0, "steps": 1}, headers={**auth, "X-Fal-Request-Timeout": "0.5"})
    done = await wait_status(app.client, late["status_url"], auth, timeout=5)
    assert done.json()["error_type"] == "request_timeout"
    result = await app.client.get(late["response_url"], headers=auth)
    assert result.status_code == 504
    assert result.headers["x-fal-request-timeout-type"] == "user"
    for b in blockers:
        await app.client.put(b["cancel_url"], headers=auth)


async def test_sync_run_returns_the_result_in_the_same_connection(app: App, auth: dict[str, str]) -> None:
    """POST /run/{endpoint} waits and answers with the endpoint's output (fal.run)."""
    response = await app.client.post("/run/openfal/utils/echo", json={"hello": "world"}, headers=auth)
    assert response.status_code == 200
    assert response.json() == {"echo": {"hello": "world"}}
    assert response.headers["x-fal-request-id"]


async def test_max_queue_length_rejects_with_429(app: App, auth: dict[str, str]) -> None:
    """fal_max_queue_length=0 rejects a submit when anything is queued."""
    slots = app.runtime.settings.concurrency["builtin"]
    blockers = [await submit(app, auth, SLEEP, {"seconds": 1, "steps": 2}) for _ in range(slots + 1)]
    response = await app.client.post(ECHO + "?fal_max_queue_length=1", json={}, headers=auth)
    assert response.status_code == 429
    for b in blockers:
        await app.client.put(b["cancel_url"], headers=auth)


async def test_store_io_off_drops_the_input_and_expires_the_result_after_an_hour(app: App, auth: dict[str, str]) -> None:
    """X-Fal-Store-IO: 0 keeps the result readable, forgets the input at completion and
    purges the request an hour after completion instead of after the retention period."""
    import time

    body = await submit(app, auth, ECHO, {"secret": 1}, headers={**auth, "X-Fal-Store-IO": "0"})
    await wait_status(app.client, body["status_url"], auth)
    record = await app.runtime.requests.get(body["request_id"])
    assert record.input == {}
    kept = await submit(app, auth, ECHO, {"keep": 1})
    await wait_status(app.client, kept["status_url"], auth)
    store = app.runtime.requests
    assert await store.purge_completed_before(time.time() - 86400, unstored_cutoff=time.time() + 1) == 1
    assert await store.get(body["request_id"]) is None
    assert await store.get(kept["request_id"]) is not None


def test_endpoint_ids_and_request_paths_follow_fals_rules() -> None:
    """Apps are owner/app (ns/owner/app for workflows and comfy); legacy ids are rewritten."""
    from openfal.endpoints.ids import app_of, normalize_endpoint, parse_request_path

    assert app_of("fal-ai/flux-1/dev/image-to-image") == "fal-ai/flux-1"
    assert app_of("workflows/me/pipeline/sub") == "workflows/me/pipeline"
    assert normalize_endpoint("12345-myapp") == "12345/myapp"
    assert normalize_endpoint("single") is None
    assert normalize_endpoint("owner/requests") is None
    target = parse_request_path("comfy/me/graph/requests/abc/status/stream/")
    assert (target.app, target.request_id, target.action) == ("comfy/me/graph", "abc", "stream")
    assert parse_request_path("fal-ai/flux-1/requests/abc/unknown") is None
    target = parse_request_path("fal-ai/flux-1/dev/image-to-image/requests/abc")
    assert (target.app, target.request_id, target.action) == ("fal-ai/flux-1", "abc", "result")


async def test_configured_public_base_url_is_used_for_every_returned_url(tmp_path) -> None:
    """With public_base_url set, submit and status URLs use it, not the Host header."""
    from tests.support import make_settings, running_app

    async with running_app(make_settings(tmp_path, auth_enabled=False, public_base_url="https://api.example.com/")) as app:
        body = (await app.client.post(ECHO, json={})).json()
        assert body["status_url"].startswith("https://api.example.com/openfal/utils/requests/")
        status = (await app.client.get(f"/openfal/utils/requests/{body['request_id']}/status")).json()
        assert status["response_url"].startswith("https://api.example.com/")


async def test_per_endpoint_openapi_has_fals_input_schema(app: App) -> None:
    """/openapi/queue/openapi.json?endpoint_id= describes the endpoint's input with fal's fields."""
    doc = (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": "fal-ai/flux-1/schnell"})).json()
    schema = doc["components"]["schemas"]["FluxSchnellInput"]
    assert schema["properties"]["num_inference_steps"]["default"] == 4
    assert schema["properties"]["num_inference_steps"]["maximum"] == 12
    assert "/fal-ai/flux-1/schnell" in doc["paths"]
    assert "/fal-ai/flux-1/requests/{request_id}/status" in doc["paths"]
    assert (await app.client.get("/openapi/queue/openapi.json", params={"endpoint_id": "nope/nope"})).status_code == 404


async def test_a_run_past_the_time_limit_is_stopped_with_504(tmp_path) -> None:
    """max_run_seconds stops a run at its next step and ends it 504 request_timeout
    (without the user-timeout header: the limit is the server's), not retried."""
    from tests.support import make_settings, running_app

    async with running_app(make_settings(tmp_path, auth_enabled=False, max_run_seconds=0.5)) as app:
        body = (await app.client.post(SLEEP, json={"seconds": 30, "steps": 300})).json()
        done = await wait_status(app.client, body["status_url"], timeout=15)
        assert done.json()["error_type"] == "request_timeout"
        result = await app.client.get(body["response_url"])
        assert result.status_code == 504 and "limit of 0.5 s" in result.json()["detail"]
        assert "x-fal-request-timeout-type" not in result.headers
        assert (await app.runtime.requests.get(body["request_id"])).attempts == 1


async def test_history_pages_newest_first_and_filters_by_status_and_endpoint(app: App, auth: dict[str, str]) -> None:
    """/api/requests lists the caller's requests newest first with their URLs, pages with
    next_before, and narrows to one status or endpoint; other keys' requests never show."""
    echoes = [await submit(app, auth, ECHO, {"i": i}) for i in range(3)]
    for body in echoes:
        await wait_status(app.client, body["status_url"], auth)
    running = await submit(app, auth, SLEEP, {"seconds": 5, "steps": 50})
    await submit(app, {"Authorization": f"Key {await app.key('other')}"}, ECHO, {"not": "mine"})
    page = (await app.client.get("/api/requests?limit=2", headers=auth)).json()
    assert [i["request_id"] for i in page["items"]] == [running["request_id"], echoes[2]["request_id"]]
    rest = (await app.client.get(f"/api/requests?before={page['next_before']}", headers=auth)).json()
    assert [i["request_id"] for i in rest["items"]] == [echoes[1]["request_id"], echoes[0]["request_id"]]
    done = (await app.client.get("/api/requests?status=COMPLETED&endpoint_id=openfal/utils/echo", headers=auth)).json()
    assert len(done["items"]) == 3 and {i["status"] for i in done["items"]} == {"COMPLETED"}
    assert (await app.client.get("/api/requests?status=DONE", headers=auth)).status_code == 422
    await app.client.put(running["cancel_url"], headers=auth)
