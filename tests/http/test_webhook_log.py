"""The webhook delivery log and redelivery, for operators: the admin API and the CLI."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from click.testing import CliRunner

from openfal import webhooks
from openfal.cli import main
from tests.support import App, Receiver, make_settings, running_app


async def _failed_delivery(app: App, receiver: Receiver, key: str) -> str:
    """Submit with a webhook the receiver refuses until the outbox gives up; the request id."""
    body = (await app.client.post(f"/openfal/utils/echo?fal_webhook={quote(receiver.url)}", json={}, headers={"Authorization": f"Key {key}"})).json()
    deadline = time.monotonic() + 15
    while not (rows := await app.runtime.outbox.for_request(body["request_id"])) or rows[0]["state"] != "failed":
        assert time.monotonic() < deadline, rows
        await asyncio.sleep(0.05)
    return body["request_id"]


async def test_admins_list_failed_deliveries_and_redeliver_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery that failed for good shows in the log with its last answer; once the
    receiver is fixed, redeliver sends it again and it ends delivered (the redelivery
    wakes the deliverer: its idle wait is made an hour long)."""
    monkeypatch.setattr(webhooks, "IDLE_SECONDS", 3600.0)
    receiver = Receiver(fail_first=2)
    try:
        async with running_app(make_settings(tmp_path, webhook_max_attempts=2)) as app:
            admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
            request_id = await _failed_delivery(app, receiver, await app.key())
            log = (await app.client.get("/api/admin/webhooks?state=failed", headers=admin)).json()
            assert [(d["request_id"], d["attempts"], d["last_status"]) for d in log] == [(request_id, 2, 503)]
            assert "body" not in log[0]
            redone = await app.client.post(f"/api/admin/webhooks/{log[0]['id']}/redeliver", headers=admin)
            assert redone.status_code == 200
            deadline = time.monotonic() + 15
            while (await app.runtime.outbox.for_request(request_id))[0]["state"] != "delivered":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            assert json.loads(receiver.received[0][1])["request_id"] == request_id
    finally:
        receiver.close()


async def test_the_webhook_log_is_for_admins_only(app: App) -> None:
    """A user key gets 403; an unknown delivery id is 404."""
    user = {"Authorization": f"Key {await app.key()}"}
    assert (await app.client.get("/api/admin/webhooks", headers=user)).status_code == 403
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    assert (await app.client.post("/api/admin/webhooks/999/redeliver", headers=admin)).status_code == 404


def test_cli_lists_and_redelivers_deliveries(tmp_path: Path) -> None:
    """`openfal webhooks list --state failed --json` shows the delivery; `redeliver ID`
    queues it again (pending, attempts reset); an unknown id exits 1."""
    receiver = Receiver(fail_first=100)

    async def make_failure() -> str:
        async with running_app(make_settings(tmp_path, webhook_max_attempts=1)) as app:
            return await _failed_delivery(app, receiver, await app.key())

    try:
        request_id = asyncio.run(make_failure())
    finally:
        receiver.close()
    runner = CliRunner()
    listed = runner.invoke(main, ["--data-dir", str(tmp_path), "webhooks", "list", "--state", "failed", "--json"])
    assert listed.exit_code == 0, listed.output
    [delivery] = json.loads(listed.stdout)
    assert delivery["request_id"] == request_id
    assert runner.invoke(main, ["--data-dir", str(tmp_path), "webhooks", "redeliver", str(delivery["id"])]).exit_code == 0
    pending = json.loads(runner.invoke(main, ["--data-dir", str(tmp_path), "webhooks", "list", "--json"]).stdout)
    assert (pending[0]["state"], pending[0]["attempts"]) == ("pending", 0)
    assert runner.invoke(main, ["--data-dir", str(tmp_path), "webhooks", "redeliver", "999"]).exit_code == 1


def test_cli_usage_reports_the_ledger(tmp_path: Path) -> None:
    """`openfal usage --period total --json` sums the key's completed requests."""

    async def make_usage() -> str:
        async with running_app(make_settings(tmp_path)) as app:
            key = await app.key()
            auth = {"Authorization": f"Key {key}"}
            body = (await app.client.post("/openfal/utils/echo", json={}, headers=auth)).json()
            deadline = time.monotonic() + 10
            while (await app.client.get(body["status_url"], headers=auth)).status_code != 200:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            return body["request_id"]

    asyncio.run(make_usage())
    out = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "usage", "--period", "total", "--json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert [(r["endpoint_id"], r["requests"], r["succeeded"]) for r in rows] == [("openfal/utils/echo", 1, 1)]
