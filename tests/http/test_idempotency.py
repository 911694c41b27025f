"""Idempotency-Key on submit (an openfal extension fal's clients do not send; curl and
resellers' own clients can): a retried submit gets the first request back, so a lost
answer never makes a second run or a second charge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import App, make_settings, running_app, wait_status

ECHO = "/openfal/utils/echo"


@pytest.fixture
async def app(tmp_path: Path, database_url: str | None) -> AsyncIterator[App]:
    """On SQLite and PostgreSQL: the unique index that settles racing submits is each
    database's own (tests/http/test_races.py forces the race through it)."""
    async with running_app(make_settings(tmp_path, database_url=database_url)) as app:
        yield app


async def test_a_repeated_submit_returns_the_first_request(app: App, auth: dict[str, str]) -> None:
    """Same key, same input: the same request id, marked as a replay; one request stored."""
    headers = {**auth, "Idempotency-Key": "order-42"}
    first = await app.client.post(ECHO, json={"n": 1}, headers=headers)
    again = await app.client.post(ECHO, json={"n": 1}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["request_id"] == first.json()["request_id"]
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert len(await app.runtime.requests.history(None)) == 1


async def test_a_replay_after_completion_says_completed(app: App, auth: dict[str, str]) -> None:
    """Replaying a finished request answers COMPLETED (no queue_position) with its URLs."""
    headers = {**auth, "Idempotency-Key": "done-1"}
    first = (await app.client.post(ECHO, json={"n": 2}, headers=headers)).json()
    await wait_status(app.client, first["status_url"], auth)
    again = (await app.client.post(ECHO, json={"n": 2}, headers=headers)).json()
    assert again["status"] == "COMPLETED" and "queue_position" not in again
    assert again["response_url"] == first["response_url"]


async def test_concurrent_submits_with_one_key_make_one_request(app: App, auth: dict[str, str]) -> None:
    """Ten submits racing with the same key all get the same request."""
    headers = {**auth, "Idempotency-Key": "burst"}
    replies = await asyncio.gather(*(app.client.post(ECHO, json={"n": 3}, headers=headers) for _ in range(10)))
    assert {r.status_code for r in replies} == {200}
    assert len({r.json()["request_id"] for r in replies}) == 1
    assert len(await app.runtime.requests.history(None)) == 1


async def test_reusing_a_key_for_different_input_is_a_422_conflict(app: App, auth: dict[str, str]) -> None:
    """The key names one submit: other input (or another endpoint) under it is a conflict,
    answered 422 in fal's detail shape (fal's Python client retries a 409 for ~50 s)."""
    headers = {**auth, "Idempotency-Key": "k"}
    await app.client.post(ECHO, json={"n": 1}, headers=headers)
    conflict = await app.client.post(ECHO, json={"n": 2}, headers=headers)
    assert conflict.status_code == 422
    assert conflict.json()["detail"][0] == {
        "loc": ["header", "Idempotency-Key"],
        "msg": "This Idempotency-Key was already used for a different endpoint or input",
        "type": "idempotency_conflict",
    }
    assert conflict.headers["x-fal-error-type"] == "bad_request"
    assert float(conflict.headers["x-fal-billable-units"]) == 0
    other_endpoint = await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=headers)
    assert other_endpoint.status_code == 422


async def test_keys_are_scoped_to_the_api_key(app: App) -> None:
    """Two API keys using the same Idempotency-Key get two requests (and see only their own)."""
    a = {"Authorization": f"Key {await app.key('a')}", "Idempotency-Key": "shared"}
    b = {"Authorization": f"Key {await app.key('b')}", "Idempotency-Key": "shared"}
    first = (await app.client.post(ECHO, json={}, headers=a)).json()
    second = (await app.client.post(ECHO, json={}, headers=b)).json()
    assert first["request_id"] != second["request_id"]


async def test_a_malformed_key_is_400(app: App, auth: dict[str, str]) -> None:
    """Keys are 1-255 printable ASCII characters."""
    reply = await app.client.post(ECHO, json={}, headers={**auth, "Idempotency-Key": "x" * 256})
    assert reply.status_code == 400 and "Idempotency-Key" in reply.json()["detail"]
    assert await app.runtime.requests.history(None) == []
