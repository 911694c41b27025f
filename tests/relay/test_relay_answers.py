"""How the relay ends a request when the upstream's status or result call refuses it
(401/403: our key; 404/410: the upstream forgot the request), and when a resumed
request names an upstream key this server no longer has: each ends at once, COMPLETED
with a clear error in fal's vocabulary, never retried into the same wall and never
submitted upstream twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from openfal.models import Status
from tests.relay.conftest import FakeUpstream, relay_app, run_relayed, submit, wait_for
from tests.support import wait_status

ACME = "/acme/model"


def up(fake: FakeUpstream, **extra: object) -> dict[str, object]:
    return {"base_url": fake.url, "keys": ["k1:s1"], **extra}


@pytest.mark.parametrize("code", [401, 403])
async def test_a_status_poll_refusing_our_key_ends_with_an_operator_error(code: int, tmp_path: Path, fake: FakeUpstream) -> None:
    fake.status_replies = [(code, {"detail": "no"})] * 10
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        record = await done.record()
    assert (done.status["error_type"], done.result.status_code) == ("internal_error", 500)
    assert f"refused this server's API key (HTTP {code})" in done.result.json()["detail"]
    assert record.attempts == 1 and len(fake.submits) == 1
    assert len(fake.of("GET", "/status")) == 1


@pytest.mark.parametrize("code", [404, 410])
async def test_a_status_poll_for_a_forgotten_request_ends_disconnected(code: int, tmp_path: Path, fake: FakeUpstream) -> None:
    fake.status_replies = [(code, {"detail": "gone"})] * 10
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        record = await done.record()
    assert (done.status["error_type"], done.result.status_code) == ("runner_disconnected", 502)
    assert f"no longer knows this request (HTTP {code})" in done.result.json()["detail"]
    assert record.attempts == 1 and len(fake.submits) == 1


@pytest.mark.parametrize("code", [401, 403])
async def test_a_result_fetch_refusing_our_key_ends_with_an_operator_error(code: int, tmp_path: Path, fake: FakeUpstream) -> None:
    fake.result_replies = [(code, {"detail": "no"})] * 10
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        record = await done.record()
    assert (done.status["error_type"], done.result.status_code) == ("internal_error", 500)
    assert f"refused this server's API key (HTTP {code})" in done.result.json()["detail"]
    assert record.attempts == 1 and len(fake.submits) == 1
    assert len([c for c in fake.of("GET") if not c.path.endswith("/status")]) == 1


@pytest.mark.parametrize("code", [404, 410])
async def test_a_result_fetch_for_a_forgotten_result_ends_incomplete(code: int, tmp_path: Path, fake: FakeUpstream) -> None:
    fake.result_replies = [(code, {"detail": "gone"})] * 10
    async with relay_app(tmp_path, up(fake), max_attempts=3) as app:
        done = await run_relayed(app, ACME, {})
        record = await done.record()
    assert (done.status["error_type"], done.result.status_code) == ("runner_incomplete_response", 502)
    assert f"no longer has this request's result (HTTP {code})" in done.result.json()["detail"]
    assert record.attempts == 1 and len(fake.submits) == 1


async def test_resuming_with_an_upstream_key_no_longer_configured_ends_clearly(tmp_path: Path, fake: FakeUpstream) -> None:
    """The request was submitted with key k1; the server restarts with only k2: it is not
    submitted again under k2 (the upstream is running it), it ends naming the missing key."""
    fake.hold.set()  # the upstream request stays IN_PROGRESS
    async with relay_app(tmp_path, up(fake), drain_seconds=0) as app:
        auth, submitted = await submit(app, ACME, {})
        rid = submitted["request_id"]

        async def handed_upstream() -> bool:
            record = await app.runtime.requests.get(rid)
            return record is not None and record.backend_state.get("key_id") == "k1" and len(fake.of("GET", "/status")) >= 2

        await wait_for(handed_upstream)
    # stopped mid-run: the request went back to the queue with its upstream handle
    record = await app.runtime.requests.get(rid)
    assert record is not None and record.status is Status.IN_QUEUE

    async with relay_app(tmp_path, up(fake, keys=["k2:s2"])) as app:
        done = await wait_status(app.client, submitted["status_url"], auth)
        result = await app.client.get(submitted["response_url"], headers=auth)
    assert done.json()["error_type"] == "internal_error" and result.status_code == 500
    assert "(k1) is no longer configured for upstream 'up'" in result.json()["detail"]
    assert len(fake.submits) == 1
