"""fal's per-request preference headers on submit: X-Fal-No-Retry (no second attempt
after a retryable failure or a lost worker) and X-Fal-Object-Lifecycle-Preference (how
long the request's files are kept)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

from openfal.backends.base import Job, Output
from openfal.backends.builtin import BuiltinBackend
from openfal.errors import RunError, UpstreamFailed
from openfal.models import MediaBlob
from tests.support import make_settings, running_app, wait_status

ECHO = "/openfal/utils/echo"


class FlakyOnce(BuiltinBackend):
    """Fails each request's first attempt with a retryable error, as an upstream 503 would."""

    def __init__(self) -> None:
        self.attempts: dict[str, int] = {}

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        results: list[Output | RunError] = []
        for job in jobs:
            self.attempts[job.request_id] = self.attempts.get(job.request_id, 0) + 1
            if self.attempts[job.request_id] == 1:
                results.append(UpstreamFailed("upstream busy", status_code=503, retryable=True))
            else:
                results.append(Output({"attempt": self.attempts[job.request_id]}))
        return results


class Painter(BuiltinBackend):
    """Makes one small image per request."""

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        return [Output({"image": MediaBlob(b"\x89PNG-ish", "image/png")}) for _ in jobs]


async def _done(app, body: dict) -> dict:
    await wait_status(app.client, body["status_url"])
    return (await app.client.get(body["response_url"])).json()


async def test_a_retryable_failure_is_retried_by_default(tmp_path: Path) -> None:
    """Without the header, a retryable failure gets a second attempt, which succeeds."""
    backend = FlakyOnce()
    async with running_app(make_settings(tmp_path, auth_enabled=False), {"builtin": backend}) as app:
        body = (await app.client.post(ECHO, json={})).json()
        assert await _done(app, body) == {"attempt": 2}


async def test_no_retry_ends_the_request_with_its_first_failure(tmp_path: Path) -> None:
    """X-Fal-No-Retry: 1 makes the first retryable failure final (fal: disables its
    server-side queue retries for this request)."""
    backend = FlakyOnce()
    async with running_app(make_settings(tmp_path, auth_enabled=False), {"builtin": backend}) as app:
        body = (await app.client.post(ECHO, json={}, headers={"X-Fal-No-Retry": "true"})).json()
        await wait_status(app.client, body["status_url"])
        result = await app.client.get(body["response_url"])
        assert result.status_code == 503 and result.json()["detail"] == "upstream busy"
        assert backend.attempts[body["request_id"]] == 1


async def test_lifecycle_preference_sets_how_long_the_requests_files_live(tmp_path: Path) -> None:
    """expiration_duration_seconds: 60 expires the request's files after a minute; null
    keeps them past the server's default; no header uses the default (7 days)."""
    async with running_app(make_settings(tmp_path, auth_enabled=False), {"builtin": Painter()}) as app:
        minute = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": 60})}
        never = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"expiration_duration_seconds": None})}
        urls = {}
        for name, headers in (("minute", minute), ("never", never), ("default", {})):
            body = (await app.client.post(ECHO, json={}, headers=headers)).json()
            urls[name] = (await _done(app, body))["image"]["url"]
        media, index = app.runtime.media, app.runtime.media_index
        assert await index.expire(media, time.time() + 61) == 1
        assert (await app.client.get(urls["minute"])).status_code == 404
        assert (await app.client.get(urls["default"])).status_code == 200
        assert await index.expire(media, time.time() + 8 * 86400) == 1
        assert await index.expire(media, time.time() + 10 * 365 * 86400) == 0
        assert (await app.client.get(urls["never"])).status_code == 200


async def test_a_malformed_lifecycle_preference_is_400(tmp_path: Path) -> None:
    """A header that is not a JSON object is refused at submit, with nothing queued."""
    async with running_app(make_settings(tmp_path, auth_enabled=False)) as app:
        reply = await app.client.post(ECHO, json={}, headers={"X-Fal-Object-Lifecycle-Preference": "60"})
        assert reply.status_code == 400 and "Lifecycle" in reply.json()["detail"]
        assert await app.runtime.requests.history(None) == []


async def test_a_runner_hint_is_kept_with_the_request_as_sent(tmp_path: Path) -> None:
    """X-Fal-Runner-Hint is matched exactly against what workers advertise (see
    tests/worker/test_runner_hints.py), so it is stored as sent; one that could name
    nothing (over 255 characters) is a 400 with nothing queued."""
    async with running_app(make_settings(tmp_path, auth_enabled=False)) as app:
        hint = "https://loras.test/style.safetensors"
        body = (await app.client.post(ECHO, json={}, headers={"X-Fal-Runner-Hint": hint})).json()
        assert (await app.runtime.requests.get(body["request_id"])).runner_hint == hint  # type: ignore[union-attr]
        reply = await app.client.post(ECHO, json={}, headers={"X-Fal-Runner-Hint": "x" * 256})
        assert reply.status_code == 400 and reply.json()["error_type"] == "bad_request"
        assert len(await app.runtime.requests.history(None)) == 1
