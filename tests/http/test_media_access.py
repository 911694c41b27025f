"""fal's storage access under /v1/storage, on SQLite and PostgreSQL with two keys: per-file
ACLs (allow / forbid / hide, rules per key), signed URLs that expire, a key's storage
defaults, and X-Fal-Object-Lifecycle-Preference's initial_acl on a request's outputs."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from openfal.backends.base import Job, Output
from openfal.backends.builtin import BuiltinBackend
from openfal.errors import RunError
from openfal.events import Preview
from openfal.models import MediaBlob
from tests.support import App, make_settings, running_app, wait_status

ECHO = "/openfal/utils/echo"
HIDE = {"default": "hide", "rules": []}


class Painter(BuiltinBackend):
    """Makes one small image per request (a real published output, without diffusers)."""

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        return [Output({"image": MediaBlob(b"\x89PNG-ish", "image/png")}) for _ in jobs]


@pytest.fixture
async def app(tmp_path: Path, database_url: str | None) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path, database_url=database_url), {"builtin": Painter()}) as app:
        yield app


@pytest.fixture
async def two(app: App) -> tuple[tuple[str, dict[str, str]], tuple[str, dict[str, str]]]:
    return await app.credited_key(1.0), await app.credited_key(1.0)


async def output_url(app: App, auth: dict[str, str], headers: dict[str, str] | None = None) -> str:
    body = (await app.client.post(ECHO, json={}, headers={**auth, **(headers or {})})).json()
    await wait_status(app.client, body["status_url"], auth)
    return (await app.client.get(body["response_url"], headers=auth)).json()["image"]["url"]


async def upload(app: App, auth: dict[str, str], headers: dict[str, str] | None = None) -> str:
    response = await app.client.post("/files/upload", content=b"hello", headers={**auth, "Content-Type": "image/png", **(headers or {})})
    return response.json()["access_url"]


async def test_a_file_without_an_acl_stays_public(app: App, two: Any) -> None:
    (_, alice), _ = two
    url = await output_url(app, alice)
    response = await app.client.get(url)
    assert response.status_code == 200 and "public" in response.headers["cache-control"]


async def test_a_hidden_file_is_404_to_another_key_and_to_no_key_but_served_to_its_owner(app: App, two: Any) -> None:
    (_, alice), (_, bob) = two
    url = await upload(app, alice)
    assert (await app.client.put("/v1/storage/files/acl", params={"url": url}, json=HIDE, headers=alice)).status_code == 200
    assert (await app.client.get(url, headers=bob)).status_code == 404
    assert (await app.client.get(url)).status_code == 404
    mine = await app.client.get(url, headers=alice)
    assert mine.status_code == 200 and mine.content == b"hello" and mine.headers["cache-control"] == "private, no-store"


async def test_rules_per_key_allow_one_key_and_forbid_the_rest(app: App, two: Any) -> None:
    (_, alice), (bob_id, bob) = two
    _, carol = await app.credited_key(1.0)
    url = await upload(app, alice)
    acl = {"default": "forbid", "rules": [{"user": bob_id, "decision": "allow"}]}
    await app.client.put("/v1/storage/files/acl", params={"url": url}, json=acl, headers=alice)
    assert (await app.client.get(url, headers=bob)).status_code == 200
    refused = await app.client.get(url, headers=carol)
    assert refused.status_code == 403 and refused.json()["error_type"] == "bad_request"
    assert (await app.client.get("/v1/storage/files/acl", params={"url": url}, headers=alice)).json()["rules"] == acl["rules"]


async def test_another_keys_file_acl_cannot_be_read_or_changed(app: App, two: Any) -> None:
    (_, alice), (_, bob) = two
    url = await upload(app, alice)
    assert (await app.client.get("/v1/storage/files/acl", params={"url": url}, headers=bob)).status_code == 404
    assert (await app.client.put("/v1/storage/files/acl", params={"url": url}, json=HIDE, headers=bob)).status_code == 404
    assert (await app.client.get(url)).status_code == 200


async def test_a_signed_url_opens_a_hidden_file_until_it_expires(app: App, two: Any) -> None:
    (_, alice), _ = two
    url = await upload(app, alice, {"X-Fal-Object-Lifecycle": json.dumps({"initial_acl": HIDE})})
    assert (await app.client.get(url)).status_code == 404
    signed = (await app.client.post("/v1/storage/files/sign", params={"url": url}, json={"expiration_seconds": 1}, headers=alice)).json()
    assert (await app.client.get(signed["signed_url"])).status_code == 200
    await asyncio.sleep(1.2)
    assert (await app.client.get(signed["signed_url"])).status_code == 404
    week = await app.client.post("/v1/storage/files/sign", params={"url": url}, json={"expiration_seconds": 7 * 86400 + 1}, headers=alice)
    assert week.status_code == 422


async def test_storage_settings_give_new_files_their_acl_and_expiry(app: App, two: Any) -> None:
    (alice_id, alice), (_, bob) = two
    settings = {"expiration_duration_seconds": 3600, "initial_acl": HIDE}
    assert (await app.client.put("/v1/storage/settings", json=settings, headers=alice)).json() == settings
    assert (await app.client.get("/v1/storage/settings", headers=alice)).json() == settings
    assert (await app.client.get("/v1/storage/settings", headers=bob)).json()["initial_acl"] is None
    url = await output_url(app, alice)
    assert (await app.client.get(url, headers=bob)).status_code == 404
    assert (await app.client.get(url, headers=alice)).status_code == 200
    media_key = app.runtime.media.key_of(url)
    assert media_key is not None
    assert (await app.runtime.media_index.access(media_key)) == (alice_id, HIDE)


async def test_the_lifecycle_header_overrides_the_storage_settings_for_one_request(app: App, two: Any) -> None:
    (_, alice), (_, bob) = two
    await app.client.put("/v1/storage/settings", json={"initial_acl": HIDE}, headers=alice)
    public = {"X-Fal-Object-Lifecycle-Preference": json.dumps({"initial_acl": {"default": "allow"}})}
    assert (await app.client.get(await output_url(app, alice, public), headers=bob)).status_code == 200
    bad = await app.client.post(ECHO, json={}, headers={**alice, "X-Fal-Object-Lifecycle-Preference": json.dumps({"initial_acl": {"default": "maybe"}})})
    assert bad.status_code == 400 and bad.json()["error_type"] == "bad_request"


async def test_deleting_a_requests_payloads_deletes_its_output_files(app: App, two: Any) -> None:
    (_, alice), _ = two
    body = (await app.client.post(ECHO, json={}, headers=alice)).json()
    await wait_status(app.client, body["status_url"], alice)
    url = (await app.client.get(body["response_url"], headers=alice)).json()["image"]["url"]
    deleted = (await app.client.delete(f"/v1/models/requests/{body['request_id']}/payloads", headers=alice)).json()
    assert deleted == {"cdn_delete_results": [{"link": url, "exception": None}]}
    assert (await app.client.get(url)).status_code == 404


class Sketcher(BuiltinBackend):
    """Draws a step preview, then one image; ``{"nsfw": true}`` plays a result the
    safety checker flagged (a real published output and preview, without diffusers)."""

    async def run(self, jobs: Sequence[Job]) -> Sequence[Output | RunError]:
        for job in jobs:
            job.emit(Preview(b"\xff\xd8 a step preview"))
        return [Output({"images": [MediaBlob(b"\x89PNG-ish", "image/png")], "has_nsfw_concepts": [bool(job.input.get("nsfw"))]}) for job in jobs]


@pytest.fixture
async def sketching(tmp_path: Path, database_url: str | None) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path, database_url=database_url), {"builtin": Sketcher()}) as app:
        yield app


async def preview_of(app: App, auth: dict[str, str], body: dict[str, Any]) -> str:
    """The preview URL the request's status carried while it ran (kept on its record)."""
    submitted = (await app.client.post(ECHO, json=body, headers=auth)).json()
    await wait_status(app.client, submitted["status_url"], auth)
    record = await app.runtime.requests.get(submitted["request_id"])
    assert record is not None and record.preview_url
    return record.preview_url


async def test_a_step_preview_is_never_public_only_its_own_key_and_its_signed_url_read_it(sketching: App) -> None:
    """Drawn before the safety check, a preview is 404 to no key and to another key,
    even when the request asked for public outputs; its own key reads it, and so does
    the signed URL the request's status handed out."""
    app = sketching
    (_, alice), (_, bob) = await app.credited_key(1.0), await app.credited_key(1.0)
    signed = await preview_of(app, {**alice, "X-Fal-Object-Lifecycle-Preference": json.dumps({"initial_acl": {"default": "allow"}})}, {})
    assert "fal_signature=" in signed
    bare = signed.split("?", 1)[0]
    assert (await app.client.get(bare)).status_code == 404
    assert (await app.client.get(bare, headers=bob)).status_code == 404
    mine = await app.client.get(bare, headers=alice)
    assert mine.status_code == 200 and mine.content == b"\xff\xd8 a step preview" and mine.headers["cache-control"] == "private, no-store"
    assert (await app.client.get(signed)).status_code == 200


async def test_previews_of_a_result_the_safety_check_flagged_are_deleted(sketching: App) -> None:
    app = sketching
    _, alice = await app.credited_key(1.0)
    clean, flagged = await preview_of(app, alice, {}), await preview_of(app, alice, {"nsfw": True})
    assert (await app.client.get(clean)).status_code == 200
    assert (await app.client.get(flagged)).status_code == 404
    assert (await app.client.get(flagged.split("?", 1)[0], headers=alice)).status_code == 404
