"""Keys scoped to endpoints and keys that expire (what resellers give their customers):
set through the admin API or the CLI, enforced at submit and at every authentication."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from click.testing import CliRunner

from openfal.auth import CACHE_SECONDS
from openfal.cli import main
from tests.support import App, make_settings, running_app


async def _admin(app: App) -> dict[str, str]:
    return {"Authorization": f"Key {await app.key('ops', admin=True)}"}


async def test_a_scoped_key_submits_only_to_matching_endpoints(app: App) -> None:
    """A key limited to openfal/utils/e* may use echo; sleep is 403 (fal's bad_request),
    and nothing is queued for it."""
    made = await app.client.post("/api/admin/keys", json={"name": "c", "endpoints": ["openfal/utils/e*"]}, headers=await _admin(app))
    assert made.status_code == 200 and made.json()["endpoints"] == ["openfal/utils/e*"]
    auth = {"Authorization": f"Key {made.json()['key']}"}
    assert (await app.client.post("/openfal/utils/echo", json={}, headers=auth)).status_code == 200
    refused = await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=auth)
    assert refused.status_code == 403 and refused.json()["error_type"] == "bad_request" and "may not use" in refused.json()["detail"]
    assert "openfal/utils/sleep" in refused.json()["detail"]
    assert len(await app.runtime.requests.history(None)) == 1


async def test_lifting_the_scope_opens_every_endpoint(app: App) -> None:
    """PATCH without endpoints lifts the scope (as for the other limits), at once in the
    process that took the change."""
    admin = await _admin(app)
    made = (await app.client.post("/api/admin/keys", json={"name": "c", "endpoints": ["x/*"]}, headers=admin)).json()
    auth = {"Authorization": f"Key {made['key']}"}
    assert (await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=auth)).status_code == 403
    patched = await app.client.patch(f"/api/admin/keys/{made['id']}", json={}, headers=admin)
    assert patched.json()["endpoints"] is None
    assert (await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=auth)).status_code == 200


async def test_an_expired_key_is_401_even_from_the_cache(app: App) -> None:
    """A key past expires_at stops authenticating at once, though it was verified (and
    cached for up to CACHE_SECONDS) a moment before."""
    admin = await _admin(app)
    soon = time.time() + 3.0  # room for a loaded machine to make the first call before it
    made = (await app.client.post("/api/admin/keys", json={"name": "c", "expires_at": soon}, headers=admin)).json()
    auth = {"Authorization": f"Key {made['key']}"}
    assert (await app.client.post("/openfal/utils/echo", json={}, headers=auth)).status_code == 200
    assert time.time() < soon and CACHE_SECONDS > 3.5, "the key must still be cached when it expires"
    while time.time() <= soon:
        await asyncio.sleep(0.05)
    expired = await app.client.post("/openfal/utils/echo", json={}, headers=auth)
    assert expired.status_code == 401 and expired.json()["detail"] == "API key expired"


async def test_bad_scopes_are_422(app: App) -> None:
    """An empty pattern list or a non-positive expiry is refused with fal's detail list."""
    admin = await _admin(app)
    for body in ({"name": "c", "endpoints": []}, {"name": "c", "endpoints": [""]}, {"name": "c", "expires_at": -1}):
        reply = await app.client.post("/api/admin/keys", json=body, headers=admin)
        assert reply.status_code == 422, body


def test_cli_scopes_and_expires_a_key(tmp_path: Path) -> None:
    """`openfal keys limits KEY --endpoint P --expires DATE` sets both; `keys list` shows them."""
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path)]
    created = runner.invoke(main, [*args, "keys", "create", "--name", "c"])
    key_id = created.output.strip().splitlines()[0].split(":")[0]
    out = runner.invoke(main, [*args, "keys", "limits", key_id, "--endpoint", "fal-ai/flux-1/*", "--endpoint", "openfal/*", "--expires", "2031-01-31"])
    assert out.exit_code == 0, out.output
    [key] = json.loads(runner.invoke(main, [*args, "keys", "list", "--json"]).stdout)
    assert key["endpoints"] == ["fal-ai/flux-1/*", "openfal/*"]
    assert key["expires_at"] == 1927584000.0  # 2031-01-31T00:00:00Z
    assert "fal-ai/flux-1/*,openfal/*" in runner.invoke(main, [*args, "keys", "list"]).output


async def test_scopes_survive_a_restart(tmp_path: Path) -> None:
    """Scopes and expiry are stored with the key, not held in memory."""
    async with running_app(make_settings(tmp_path)) as app:
        key, _ = await app.runtime.keys.create("c")
        await app.runtime.keys.set_limits(key.id, endpoints=("a/*",), expires_at=2e9)
    async with running_app(make_settings(tmp_path)) as app:
        again = await app.runtime.keys.get(key.id)
        assert again.endpoints == ("a/*",) and again.expires_at == 2e9 and not again.may_use("b/c")


async def test_me_shows_a_key_its_own_limits_and_fresh_balance(app: App) -> None:
    """/api/me: the caller's key (no secret), its scope and expiry, and the balance as it
    is now (not as cached at authentication)."""
    from openfal import accounting

    made = (await app.client.post("/api/admin/keys", json={"name": "c", "endpoints": ["a/*"], "credit": 2.5}, headers=await _admin(app))).json()
    auth = {"Authorization": f"Key {made['key']}"}
    me = (await app.client.get("/api/me", headers=auth)).json()["key"]
    assert (me["id"], me["balance"], me["endpoints"]) == (made["id"], 2.5, ["a/*"]) and "key" not in me
    async with app.runtime.db.write() as conn:
        await accounting.credit(conn, made["id"], 500_000)
    assert (await app.client.get("/api/me", headers=auth)).json()["key"]["balance"] == 3.0
    assert (await app.client.get("/api/me")).status_code == 401


async def test_me_without_auth_is_null(tmp_path: Path) -> None:
    """With auth off there is no key to show."""
    async with running_app(make_settings(tmp_path, auth_enabled=False)) as app:
        assert (await app.client.get("/api/me")).json() == {"key": None}
