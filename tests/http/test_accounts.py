"""Money and limits: reserve at submit, settle once at the end, limits that queue."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from openfal import accounting
from openfal.store import ledger
from tests.support import App, make_settings, running_app, sample, scrape, wait_status

PRICED = {"openfal/utils/*": {"per_request": 0.01}}
CENT = 10_000  # micro-dollars



@pytest.fixture
async def priced(tmp_path: Path, database_url: str | None):
    """Priced endpoints, on SQLite and on PostgreSQL (reserves, settlement and limits race)."""
    async with running_app(make_settings(tmp_path, prices=PRICED, database_url=database_url)) as app:
        yield app


async def test_ledger_balances_to_the_cent_for_a_mix_of_outcomes(priced: App) -> None:
    """Completed requests are charged; failed, cancelled (queued and running) and timed-out
    ones are refunded; balance == credit - charges == the ledger's sum, each request settled once."""
    app = priced
    key_id, auth = await app.credited_key(1.00)
    slots = app.runtime.settings.concurrency["builtin"]
    post = lambda path, body, **h: app.client.post(path, json=body, headers={**auth, **h})  # noqa: E731
    ok = [(await post("/openfal/utils/echo", {"i": i})).json() for i in range(3)]
    failed = [(await post("/openfal/utils/sleep", {"seconds": 0, "steps": 1, "fail_with": "x"})).json() for _ in range(2)]
    running = (await post("/openfal/utils/sleep", {"seconds": 5, "steps": 50})).json()
    blockers = [(await post("/openfal/utils/sleep", {"seconds": 1.5, "steps": 3})).json() for _ in range(slots)]
    queued = [(await post("/openfal/utils/sleep", {"seconds": 0, "steps": 1})).json() for _ in range(2)]
    late = (await post("/openfal/utils/sleep", {"seconds": 0, "steps": 1}, **{"X-Fal-Request-Timeout": "0.3"})).json()
    for q in queued:
        assert (await app.client.put(q["cancel_url"], headers=auth)).status_code == 202
    while (await app.client.get(running["status_url"], headers=auth)).json()["status"] != "IN_PROGRESS":
        await asyncio.sleep(0.02)
    await app.client.put(running["cancel_url"], headers=auth)
    everything = ok + failed + [running] + blockers + queued + [late]
    for body in everything:
        await wait_status(app.client, body["status_url"], auth)
    assert (await app.client.get(late["status_url"], headers=auth)).json()["error_type"] == "request_timeout"

    charged = len(ok) + len(blockers)
    balance = await ledger.balance(app.runtime.db, key_id)
    assert balance == 1_000_000 - charged * CENT
    assert await ledger.ledger_sum(app.runtime.db, key_id) == balance
    rows = await ledger.usage(app.runtime.db, key_id=key_id, period="total")
    assert sum(r.requests for r in rows) == len(everything)
    assert sum(r.succeeded for r in rows) == charged
    assert sum(r.cost_micros for r in rows) == charged * CENT


async def test_submit_without_enough_credit_is_refused_and_nothing_is_queued(priced: App) -> None:
    """A key whose balance cannot cover the reserve gets 403 and no request is stored."""
    key_id, auth = await priced.credited_key(0.005)
    response = await priced.client.post("/openfal/utils/echo", json={}, headers=auth)
    assert response.status_code == 403
    assert "balance" in response.json()["detail"]
    assert await priced.runtime.requests.history(key_id) == []
    assert await ledger.balance(priced.runtime.db, key_id) == 5_000


async def test_requests_per_minute_limit_answers_429(priced: App) -> None:
    """Past the key's rpm, submits are refused with 429 (clients retry with backoff)."""
    _, auth = await priced.credited_key(10, rpm=2)
    codes = [(await priced.client.post("/openfal/utils/echo", json={}, headers=auth)).status_code for _ in range(3)]
    assert codes == [200, 200, 429]


async def test_concurrency_limit_queues_instead_of_refusing(priced: App) -> None:
    """With max_concurrent=1, three requests all complete and never two run at once."""
    key_id, auth = await priced.credited_key(10, max_concurrent=1)
    bodies = [(await priced.client.post("/openfal/utils/sleep", json={"seconds": 0.3, "steps": 3}, headers=auth)).json() for _ in range(3)]
    peak = 0
    while True:
        statuses = [(await priced.client.get(b["status_url"], headers=auth)).json()["status"] for b in bodies]
        peak = max(peak, statuses.count("IN_PROGRESS"))
        if statuses.count("COMPLETED") == 3:
            break
        await asyncio.sleep(0.02)
    assert peak == 1
    records = [await priced.runtime.requests.get(b["request_id"]) for b in bodies]
    assert all(r.error is None for r in records)


def test_megapixels_are_billed_from_delivered_images() -> None:
    """A result's images are priced by 1024x1024 megapixels (FLUX dev: $0.025/MP)."""
    prices = accounting.PriceList()
    got = accounting.delivered({"images": [{"width": 1024, "height": 1024}, {"width": 1024, "height": 512}]})
    assert (got.images, got.megapixels) == (2, 1.5)
    assert prices.charge("fal-ai/flux-1/dev", got) == 37_500
    assert prices.estimate("fal-ai/flux-1/dev", {"num_images": 2, "image_size": "square_hd"}) == 50_000
    assert prices.charge("fal-ai/flux-pro/kontext/max/multi", got) == 160_000


async def test_admin_api_needs_an_admin_key(app: App) -> None:
    """A user key gets 403 on admin routes; an admin key manages keys and reads usage."""
    user = {"Authorization": f"Key {await app.key('user')}"}
    admin = {"Authorization": f"Key {await app.key('root', admin=True)}"}
    assert (await app.client.get("/api/admin/keys", headers=user)).status_code == 403
    made = (await app.client.post("/api/admin/keys", json={"name": "reseller", "credit": 2.5, "max_concurrent": 2}, headers=admin)).json()
    assert made["balance"] == 2.5 and made["max_concurrent"] == 2 and ":" in made["key"]
    new = {"Authorization": f"Key {made['key']}"}
    body = (await app.client.post("/openfal/utils/echo", json={}, headers=new)).json()
    await wait_status(app.client, body["status_url"], new)
    usage = (await app.client.get("/api/admin/usage", params={"key_id": made["id"], "period": "total"}, headers=admin)).json()
    assert usage[0]["requests"] == 1 and usage[0]["succeeded"] == 1


async def test_metrics_count_submits_and_completions_by_endpoint_and_outcome(app: App) -> None:
    """Each submit and each ending moves its own counter by one (counters are
    process-wide, so the test reads the change around its own requests)."""
    auth = {"Authorization": f"Key {await app.key()}"}
    admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
    before = await scrape(app.client, admin)
    for path, body in [("echo", {}), ("echo", {}), ("sleep", {"seconds": 0.01, "steps": 1, "fail_with": "nope"})]:
        submitted = (await app.client.post(f"/openfal/utils/{path}", json=body, headers=auth)).json()
        await wait_status(app.client, submitted["status_url"], auth)
    after = await scrape(app.client, admin)

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("openfal_requests_submitted_total", endpoint="openfal/utils/echo") == 2
    assert moved("openfal_requests_completed_total", endpoint="openfal/utils/echo", outcome="ok") == 2
    assert moved("openfal_requests_completed_total", endpoint="openfal/utils/sleep", outcome="runner_server_error") == 1
    assert moved("openfal_requests_completed_total", endpoint="openfal/utils/sleep", outcome="ok") == 0
    assert moved("openfal_request_duration_seconds_count", endpoint="openfal/utils/echo") == 2


async def test_metrics_queue_depth_is_the_number_of_requests_waiting(tmp_path: Path) -> None:
    """Read from the store at scrape time: three submits with no worker running wait."""
    async with running_app(make_settings(tmp_path, in_process_workers=False)) as app:
        auth = {"Authorization": f"Key {await app.key()}"}
        admin = {"Authorization": f"Key {await app.key('ops', admin=True)}"}
        assert sample(await scrape(app.client, admin), "openfal_queue_depth", backend="builtin") == 0
        for _ in range(3):
            await app.client.post("/openfal/utils/echo", json={}, headers=auth)
        assert sample(await scrape(app.client, admin), "openfal_queue_depth", backend="builtin") == 3
