"""Fair share between keys over fal's API: two keys' queued requests take turns (on
SQLite and PostgreSQL), a key's ``max_queued`` (set through the admin API or the CLI)
refuses submits past it with 429 in fal's shape, and a queued status carries
``eta_seconds`` once runs have been timed."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from openfal.cli import main
from tests.support import App, make_settings, running_app


async def customer(app: App, name: str) -> tuple[str, dict[str, str]]:
    key, secret = await app.runtime.keys.create(name)
    return key.id, {"Authorization": f"Key {secret}"}


async def submit(app: App, headers: dict[str, str], **body: object) -> dict:
    response = await app.client.post("/openfal/utils/sleep", json={"seconds": 0, "steps": 1, **body}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_second_keys_request_is_next_after_the_first_keys_burst_head(tmp_path: Path, database_url: str | None) -> None:
    """Key a queues three, then key b one: b's status says one request is ahead of it,
    and a's last says three (b's took a turn between a's)."""
    async with running_app(make_settings(tmp_path, in_process_workers=False, database_url=database_url)) as app:
        _, a = await customer(app, "a")
        _, b = await customer(app, "b")
        burst = [await submit(app, a) for _ in range(3)]
        single = await submit(app, b)
        positions = []
        for submitted, headers in [*[(s, a) for s in burst], (single, b)]:
            status = (await app.client.get(submitted["status_url"], headers=headers)).json()
            positions.append(status["queue_position"])
        assert positions == [0, 2, 3, 1]


async def test_max_queued_from_the_admin_api_refuses_the_next_submit_with_429(tmp_path: Path) -> None:
    """With max_queued=2 the third waiting request is a 429 with a detail, and nothing is stored."""
    async with running_app(make_settings(tmp_path, in_process_workers=False)) as app:
        admin = {"Authorization": f"Key {await app.key('admin', admin=True)}"}
        key_id, headers = await customer(app, "limited")
        patched = await app.client.patch(f"/api/admin/keys/{key_id}", json={"max_queued": 2}, headers=admin)
        assert patched.status_code == 200 and patched.json()["max_queued"] == 2
        for _ in range(2):
            await submit(app, headers)
        refused = await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=headers)
        assert refused.status_code == 429
        assert "max_queued" in refused.json()["detail"]
        assert await app.runtime.requests.queue_length("builtin") == 2


def test_max_queued_is_set_and_listed_by_the_cli(tmp_path: Path) -> None:
    """``openfal keys limits ID --max-queued 5`` sets it; ``keys list --json`` shows it."""
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path)]
    created = runner.invoke(main, [*args, "keys", "create", "--name", "c"])
    key_id = created.output.strip().splitlines()[0].split(":")[0]
    out = runner.invoke(main, [*args, "keys", "limits", key_id, "--max-queued", "5"])
    assert out.exit_code == 0, out.output
    [key] = json.loads(runner.invoke(main, [*args, "keys", "list", "--json"]).stdout)
    assert key["max_queued"] == 5


async def test_a_queued_status_carries_eta_seconds_once_runs_were_timed(tmp_path: Path) -> None:
    """After a timed run, a request queued behind a running one gets a positive
    ``eta_seconds``; before any run there is none."""
    settings = make_settings(tmp_path, concurrency={"builtin": 1}, heartbeat_seconds=0.2)
    async with running_app(settings) as app:
        _, headers = await customer(app, "c")
        running = await submit(app, headers, seconds=30, steps=30)
        queued = await submit(app, headers, seconds=0.2)
        status = (await app.client.get(queued["status_url"], headers=headers)).json()
        assert status["status"] == "IN_QUEUE" and "eta_seconds" not in status
        await app.client.put(running["cancel_url"], headers=headers)  # a cancelled run is not timed
        await wait_completed(app, queued, headers)
        running = await submit(app, headers, seconds=30, steps=30)
        queued = await submit(app, headers)
        status = (await app.client.get(queued["status_url"], headers=headers)).json()
        assert status["status"] == "IN_QUEUE" and status["eta_seconds"] > 0
        await app.client.put(running["cancel_url"], headers=headers)


async def wait_completed(app: App, submitted: dict, headers: dict[str, str]) -> None:
    from tests.support import wait_status

    assert (await wait_status(app.client, submitted["status_url"], headers)).status_code == 200
