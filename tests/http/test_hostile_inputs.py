"""Hostile input gets a clear 4xx in fal's shape on both databases: never a 500, never a
503 that is no outage, never a half-made record (issue 8's findings F2-F4, F6-F8)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support import App, make_settings, running_app

JSON = {"content-type": "application/json"}


@pytest.fixture
async def app(database_url: str | None, tmp_path: Path) -> AsyncIterator[App]:
    """The app on SQLite, then on PostgreSQL (``database_url``, tests/http/conftest.py)."""
    overrides = {"database_url": database_url} if database_url else {}
    async with running_app(make_settings(tmp_path, **overrides)) as running:
        yield running


@pytest.fixture
async def admin(app: App) -> dict[str, str]:
    return {"Authorization": f"Key {await app.key('admin', admin=True)}"}


def _detail_list(body: dict) -> list:
    assert isinstance(body["detail"], list) and body["detail"], body
    return body["detail"]


async def test_a_nul_in_a_query_parameter_is_a_422_not_a_store_outage(app: App, admin: dict[str, str]) -> None:
    response = await app.client.get("/api/requests?endpoint_id=a%00b", headers=admin)
    assert response.status_code == 422
    assert _detail_list(response.json())[0]["loc"] == ["query"]


async def test_a_nul_in_a_webhook_url_is_a_422_and_nothing_is_queued(app: App, admin: dict[str, str]) -> None:
    response = await app.client.post("/openfal/utils/echo?fal_webhook=https://example.com/%00", headers=admin, json={})
    assert response.status_code == 422
    listed = await app.client.get("/api/requests", headers=admin)
    assert listed.json()["items"] == []


async def test_a_nul_in_a_path_is_a_404_in_fals_shape(app: App, admin: dict[str, str]) -> None:
    response = await app.client.post("/api/admin/keys/abc%00/revoke", headers=admin)
    assert response.status_code == 404
    assert response.json() == {"detail": "Path not found", "error_type": "bad_request"}


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param('{"p": "a\\u0000b"}', id="nul-in-a-string"),
        pytest.param('{"a\\u0000": 1}', id="nul-in-a-key"),
        pytest.param('{"p": "\\ud800"}', id="lone-surrogate"),
        pytest.param("[" * 1000 + "]" * 1000, id="nested-1000-deep"),
        pytest.param('{"p": ' + "[" * 65 + "]" * 65 + "}", id="nested-past-the-limit"),
    ],
)
async def test_a_body_that_could_not_be_stored_or_answered_is_a_422_at_submit(app: App, admin: dict[str, str], raw: str) -> None:
    response = await app.client.post("/openfal/utils/echo", headers={**admin, **JSON}, content=raw)
    assert response.status_code == 422
    assert _detail_list(response.json())[0]["type"] == "json_invalid"
    assert (await app.client.get("/api/requests", headers=admin)).json()["items"] == []


async def test_a_body_nested_within_the_limit_runs_and_reads_back(app: App, admin: dict[str, str]) -> None:
    nested: object = "leaf"
    for _ in range(60):
        nested = [nested]
    body = {"p": nested, "s": "Grüße ☃ 😀"}
    response = await app.client.post("/run/openfal/utils/echo", headers=admin, json=body)
    assert response.status_code == 200
    assert response.json() == {"echo": body}


async def test_key_limits_past_the_column_range_are_a_422_and_no_key_is_made(app: App, admin: dict[str, str]) -> None:
    response = await app.client.post("/api/admin/keys", headers=admin, json={"name": "p", "max_concurrent": 99999999999999999999})
    assert response.status_code == 422
    assert _detail_list(response.json())[0]["loc"] == ["body", "max_concurrent"]
    names = [k["name"] for k in (await app.client.get("/api/admin/keys", headers=admin)).json()]
    assert "p" not in names


async def test_a_key_is_created_with_its_limits_and_credit_in_one_step(app: App, admin: dict[str, str]) -> None:
    body = {"name": "reseller", "max_concurrent": 2, "rpm": 60, "endpoints": ["fal-ai/flux-1/*"], "credit": 12.5}
    made = (await app.client.post("/api/admin/keys", headers=admin, json=body)).json()
    assert (made["max_concurrent"], made["rpm"], made["endpoints"], made["balance"]) == (2, 60, ["fal-ai/flux-1/*"], 12.5)
    listed = {k["id"]: k for k in (await app.client.get("/api/admin/keys", headers=admin)).json()}
    assert listed[made["id"]]["balance"] == 12.5


@pytest.mark.parametrize("name", ["a\u0000b", "x" * 256, ""])
async def test_a_key_name_the_store_cannot_hold_is_a_422(app: App, admin: dict[str, str], name: str) -> None:
    response = await app.client.post("/api/admin/keys", headers=admin, json={"name": name})
    assert response.status_code == 422


@pytest.mark.parametrize("request_id", ["%00", "a%0db", "a%0ab", "x" * 200])
async def test_a_request_id_that_names_no_request_is_a_404(app: App, admin: dict[str, str], request_id: str) -> None:
    response = await app.client.get(f"/openfal/utils/requests/{request_id}/status", headers=admin)
    assert response.status_code == 404
    value = response.headers["x-fal-request-id"]
    assert value.isascii() and value.isprintable()


@pytest.mark.parametrize("limit", ["-1", "abc", "1e3", "99999999999999999999"])
async def test_a_max_queue_length_that_is_not_a_count_is_a_422(app: App, admin: dict[str, str], limit: str) -> None:
    response = await app.client.post(f"/openfal/utils/echo?fal_max_queue_length={limit}", headers=admin, json={})
    assert response.status_code == 422
    assert _detail_list(response.json())[0]["loc"] == ["query", "fal_max_queue_length"]


async def test_a_max_queue_length_the_queue_is_under_accepts_the_submit(app: App, admin: dict[str, str]) -> None:
    assert (await app.client.post("/openfal/utils/echo?fal_max_queue_length=5", headers=admin, json={})).status_code == 200


async def test_metrics_need_an_admin_key(app: App, admin: dict[str, str]) -> None:
    user = {"Authorization": f"Key {await app.key('user')}"}
    assert (await app.client.get("/metrics")).status_code == 401
    assert (await app.client.get("/metrics", headers=user)).status_code == 403
    assert (await app.client.get("/metrics", headers=admin)).status_code == 200


async def test_the_endpoint_catalog_and_its_openapi_are_public_as_on_fal(app: App) -> None:
    assert (await app.client.get("/api/endpoints")).status_code == 200
    assert (await app.client.get("/openapi/queue/openapi.json?endpoint_id=openfal/utils/echo")).status_code == 200
