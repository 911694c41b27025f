"""Keys, ownership and fal-shaped errors for bad input."""

from __future__ import annotations

import pytest

from openfal.backends.builtin import BuiltinBackend
from tests.support import App, make_settings, running_app, wait_status

ECHO = "/openfal/utils/echo"


async def test_missing_key_is_401(app: App) -> None:
    """Without Authorization every queue route answers 401 with a detail."""
    response = await app.client.post(ECHO, json={})
    assert response.status_code == 401
    assert "detail" in response.json()


async def test_wrong_or_malformed_key_is_401(app: App) -> None:
    """A wrong secret, an unknown id or a bare token are all refused."""
    good = await app.key()
    key_id = good.split(":")[0]
    for header in [f"Key {key_id}:wrong", "Key nobody:secret", f"Key {key_id}", "Basic abc", "Key "]:
        assert (await app.client.post(ECHO, json={}, headers={"Authorization": header})).status_code == 401


async def test_key_and_bearer_schemes_both_work(app: App) -> None:
    """fal's `Key` scheme and resellers' `Bearer` scheme authenticate the same key."""
    secret = await app.key()
    for scheme in ["Key", "Bearer", "bearer"]:
        response = await app.client.post(ECHO, json={}, headers={"Authorization": f"{scheme} {secret}"})
        assert response.status_code == 200


async def test_revoked_key_is_refused(tmp_path) -> None:
    """A revoked key stops working (the cache is per process and short-lived)."""
    async with running_app(make_settings(tmp_path)) as app:
        key, secret = await app.runtime.keys.create("gone")
        await app.runtime.keys.revoke(key.id)
        assert (await app.client.post(ECHO, json={}, headers={"Authorization": f"Key {secret}"})).status_code == 401


async def test_a_key_cannot_see_or_cancel_another_keys_request(app: App) -> None:
    """Another key's request is 404 for status, result and cancel."""
    alice = {"Authorization": f"Key {await app.key('alice')}"}
    bob = {"Authorization": f"Key {await app.key('bob')}"}
    body = (await app.client.post(ECHO, json={}, headers=alice)).json()
    await wait_status(app.client, body["status_url"], alice)
    assert (await app.client.get(body["status_url"], headers=bob)).status_code == 404
    assert (await app.client.get(body["response_url"], headers=bob)).status_code == 404
    assert (await app.client.put(body["cancel_url"], headers=bob)).json() == {"status": "NOT_FOUND", "error_type": "bad_request"}


async def test_auth_can_be_turned_off(tmp_path) -> None:
    """With auth_enabled=False requests need no key."""
    async with running_app(make_settings(tmp_path, auth_enabled=False)) as app:
        assert (await app.client.post(ECHO, json={})).status_code == 200


async def test_invalid_input_is_422_with_a_detail_list_at_submit(tmp_path) -> None:
    """Schema violations answer 422 {detail:[{loc,msg,type}]} before anything is queued."""
    from openfal.endpoints.catalog import CATALOG

    class Local(BuiltinBackend):
        name = "local"

    async with running_app(make_settings(tmp_path, auth_enabled=False), {"local": Local()}) as app:
        response = await app.client.post("/fal-ai/flux-1/dev", json={"num_images": 9, "image_size": "huge"})
        assert response.status_code == 422
        detail = response.json()["detail"]
        locs = {tuple(d["loc"]) for d in detail}
        assert ("body", "prompt") in locs and ("body", "num_images") in locs
        assert all({"loc", "msg", "type"} <= set(d) for d in detail)
        assert await app.runtime.requests.history(None) == []
        assert "fal-ai/flux-1/dev" in CATALOG


@pytest.mark.parametrize(
    ("headers", "fragment"),
    [
        ({"X-Fal-Queue-Priority": "urgent"}, "X-Fal-Queue-Priority"),
        ({"X-Fal-Request-Timeout": "soon"}, "X-Fal-Request-Timeout"),
        ({"X-Fal-Request-Timeout": "-3"}, "X-Fal-Request-Timeout"),
    ],
)
async def test_bad_queue_headers_are_400_bad_request(app: App, headers: dict[str, str], fragment: str) -> None:
    """Invalid priority or timeout headers answer 400 with error_type bad_request."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post(ECHO, json={}, headers={**auth, **headers})
    assert response.status_code == 400
    assert fragment in response.json()["detail"]
    assert response.json()["error_type"] == "bad_request"
    assert response.headers["x-fal-error-type"] == "bad_request"


async def test_bad_json_is_422_json_invalid(app: App) -> None:
    """A body that is not JSON answers 422 with type json_invalid."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post(ECHO, content=b'{"a": ', headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


async def test_unknown_endpoint_is_404(app: App) -> None:
    """Submitting to an endpoint nobody serves answers 404 with a detail."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post("/someone/unknown-model", json={}, headers=auth)
    assert response.status_code == 404
    assert "not found" in response.json()["detail"]


async def test_oversized_body_is_413_and_nothing_is_queued(tmp_path) -> None:
    """A body over max_body_bytes answers 413 and no request is stored."""
    async with running_app(make_settings(tmp_path, auth_enabled=False, max_body_bytes=2048)) as app:
        response = await app.client.post(ECHO, json={"blob": "x" * 5000})
        assert response.status_code == 413
        assert await app.runtime.requests.history(None) == []


async def test_bad_webhook_url_is_422(app: App) -> None:
    """fal_webhook must be an absolute http(s) URL (tests/http/test_webhooks.py has the rest)."""
    auth = {"Authorization": f"Key {await app.key()}"}
    response = await app.client.post(ECHO + "?fal_webhook=ftp://x", json={}, headers=auth)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "fal_webhook"]


async def test_numbers_past_what_the_database_holds_are_422(app: App) -> None:
    """Paging ids past BIGINT (found by schemathesis), Infinity/NaN amounts and dates
    (json.loads accepts them) are refused with fal's 422, never a 500."""
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}", "Content-Type": "application/json"}
    assert (await app.client.get("/api/requests?before=20225412431344963584", headers=admin)).status_code == 422
    assert (await app.client.get("/api/admin/webhooks?before=20225412431344963584", headers=admin)).status_code == 422
    assert (await app.client.post("/api/admin/webhooks/20225412431344963584/redeliver", headers=admin)).status_code == 422
    key_id = (await app.client.get("/api/me", headers=admin)).json()["key"]["id"]
    for amount in ("Infinity", "NaN", "1e300"):
        reply = await app.client.post(f"/api/admin/keys/{key_id}/credit", content=f'{{"amount": {amount}}}', headers=admin)
        assert reply.status_code == 422, amount
    reply = await app.client.post("/api/admin/keys", content='{"name": "c", "expires_at": Infinity}', headers=admin)
    assert reply.status_code == 422


async def test_nan_and_infinity_in_a_body_are_422_json_invalid(app: App) -> None:
    """Python's JSON extensions would be stored and then fail to serialize in the result;
    they are refused at submit like any other invalid JSON."""
    auth = {"Authorization": f"Key {await app.key()}", "Content-Type": "application/json"}
    for body in ('{"x": NaN}', '{"x": [Infinity]}', '{"x": -Infinity}'):
        reply = await app.client.post("/openfal/utils/echo", content=body, headers=auth)
        assert reply.status_code == 422 and reply.json()["detail"][0]["type"] == "json_invalid", body
    assert await app.runtime.requests.history(None) == []


async def test_browser_apps_on_other_origins_may_call_the_api(app: App) -> None:
    """fal's JS client in a web page: the preflight for an authorized JSON POST passes,
    and answers (errors too) carry the CORS headers and expose x-fal-request-id."""
    origin = {"Origin": "https://app.example.com"}
    preflight = await app.client.options(
        ECHO, headers={**origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type, x-fal-queue-priority"}
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] in {"*", "https://app.example.com"}
    refused = await app.client.post(ECHO, json={}, headers=origin)
    assert refused.status_code == 401 and "access-control-allow-origin" in refused.headers
    assert "x-fal-request-id" in refused.headers["access-control-expose-headers"]


async def test_cors_can_be_turned_off(tmp_path) -> None:
    """With cors_origins empty no CORS headers are sent."""
    async with running_app(make_settings(tmp_path, cors_origins=())) as app:
        reply = await app.client.post(ECHO, json={}, headers={"Origin": "https://app.example.com"})
        assert "access-control-allow-origin" not in reply.headers
