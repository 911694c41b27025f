"""Revoking a key that is already cached: through the admin API it stops at once in the
process that took the change; through the CLI (another process, sharing only the
database) it stops within ``openfal.auth.CACHE_SECONDS``, the documented window."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from openfal import auth as auth_module
from tests.support import ROOT, App, make_settings, running_app

ECHO = "/openfal/utils/echo"


async def test_a_key_revoked_through_the_admin_api_stops_at_once_though_cached(app: App) -> None:
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    made = (await app.client.post("/api/admin/keys", json={"name": "customer"}, headers=admin)).json()
    user = {"Authorization": f"Key {made['key']}"}
    for _ in range(3):  # verified once, then served from the cache
        assert (await app.client.post(ECHO, json={}, headers=user)).status_code == 200

    revoked = await app.client.post(f"/api/admin/keys/{made['id']}/revoke", headers=admin)
    assert revoked.status_code == 200 and revoked.json() == {"id": made["id"], "active": False}

    refused = await app.client.post(ECHO, json={}, headers=user)
    assert refused.status_code == 401 and refused.json()["detail"] == "Invalid or revoked API key"
    assert (await app.client.get("/api/requests", headers=user)).status_code == 401


async def test_a_key_revoked_with_the_cli_stops_within_the_cache_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window is shortened to 1 s so the test waits little; the CLI process runs against
    the same data folder, so this process learns of the
    revocation only when its cached verification runs out."""
    monkeypatch.setattr(auth_module, "CACHE_SECONDS", 1.0)
    async with running_app(make_settings(tmp_path)) as app:
        key, secret = await app.runtime.keys.create("customer")
        user = {"Authorization": f"Key {secret}"}
        assert (await app.client.post(ECHO, json={}, headers=user)).status_code == 200

        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "openfal", "--data-dir", str(tmp_path), "keys", "revoke", key.id, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await cli.communicate()
        assert cli.returncode == 0 and f"revoked {key.id}" in out.decode()
        revoked_at = time.monotonic()

        while (await app.client.post(ECHO, json={}, headers=user)).status_code == 200:
            assert time.monotonic() - revoked_at < auth_module.CACHE_SECONDS + 5, "the revoked key kept working past the window"
        refused = await app.client.post(ECHO, json={}, headers=user)
        assert refused.status_code == 401 and refused.json()["detail"] == "Invalid or revoked API key"
        assert not (await app.runtime.keys.list())[0].active


async def test_revoking_an_unknown_or_already_revoked_key_is_a_clear_404(app: App) -> None:
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    key, _ = await app.runtime.keys.create("customer")
    assert (await app.client.post(f"/api/admin/keys/{key.id}/revoke", headers=admin)).status_code == 200
    again = await app.client.post(f"/api/admin/keys/{key.id}/revoke", headers=admin)
    assert again.status_code == 404 and key.id in again.json()["detail"]
    assert (await app.client.post("/api/admin/keys/nope/revoke", headers=admin)).status_code == 404
