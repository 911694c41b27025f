"""fal's Platform API under /v1, on SQLite and PostgreSQL, with two customer keys and an
admin key: each route's shape, pagination, isolation between keys, and reports that
agree with what the ledger charged and what the requests' own records say."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from openfal import loghist
from openfal.endpoints.catalog import CATALOG
from openfal.endpoints.licences import Licence
from openfal.errors import FAL_ERROR_TYPES
from openfal.store import ledger, rollup
from openfal.store.reports import percentiles
from openfal.store.schema import charge_rollup
from openfal.store.schema import ledger as ledger_table
from tests.support import App, make_settings, running_app, wait_status

PRICED = {"openfal/utils/*": {"per_request": 0.01}}
ECHO = "/openfal/utils/echo"


class Keys:
    def __init__(self, admin: dict[str, str], alice: tuple[str, dict[str, str]], bob: tuple[str, dict[str, str]]) -> None:
        self.admin = admin
        self.alice_id, self.alice = alice
        self.bob_id, self.bob = bob


@pytest.fixture
async def app(tmp_path: Path, database_url: str | None) -> AsyncIterator[App]:
    async with running_app(make_settings(tmp_path, prices=PRICED, database_url=database_url)) as app:
        yield app


@pytest.fixture
async def keys(app: App) -> Keys:
    admin = {"Authorization": f"Key {await app.key('operator', admin=True)}"}
    return Keys(admin, await app.credited_key(1.0), await app.credited_key(1.0))


async def run(app: App, auth: dict[str, str], path: str = ECHO, body: dict[str, Any] | None = None) -> dict[str, Any]:
    submitted = (await app.client.post(path, json=body or {}, headers=auth)).json()
    await wait_status(app.client, submitted["status_url"], auth)
    return submitted


def assert_fal_error(response: Any, status: int) -> None:
    assert response.status_code == status
    assert response.json()["error_type"] in FAL_ERROR_TYPES
    assert response.headers["x-fal-error-type"] == response.json()["error_type"]


# -- models and pricing -------------------------------------------------------------


async def test_models_pages_with_a_cursor_until_every_served_endpoint_is_listed(app: App, keys: Keys) -> None:
    seen, cursor = [], None
    while True:
        page = (await app.client.get("/v1/models", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=keys.alice)).json()
        assert len(page["models"]) <= 2
        seen += [m["endpoint_id"] for m in page["models"]]
        cursor = page["next_cursor"]
        assert page["has_more"] is (cursor is not None)
        if cursor is None:
            break
    assert seen == [route.endpoint_id for route in app.runtime.router.endpoints()]


async def test_models_finds_by_id_searches_by_words_and_category_and_expands_openapi(app: App, keys: Keys) -> None:
    found = (await app.client.get("/v1/models", params={"endpoint_id": "openfal/utils/echo,openfal/utils/sleep", "expand": "openapi-3.0"}, headers=keys.alice)).json()
    assert [m["endpoint_id"] for m in found["models"]] == ["openfal/utils/echo", "openfal/utils/sleep"]
    assert found["models"][0]["openapi"]["openapi"].startswith("3.")
    assert found["models"][0]["metadata"]["category"] == "utility" and found["models"][0]["metadata"]["status"] == "active"
    searched = (await app.client.get("/v1/models", params={"q": "sleeps progress"}, headers=keys.alice)).json()
    assert [m["endpoint_id"] for m in searched["models"]] == ["openfal/utils/sleep"]
    assert (await app.client.get("/v1/models", params={"category": "text-to-image"}, headers=keys.alice)).json()["models"] == []
    assert (await app.client.get("/v1/models", params={"status": "deprecated"}, headers=keys.alice)).json()["models"] == []
    assert "openapi" not in found["models"][1] or found["models"][1]["openapi"]
    too_many = await app.client.get("/v1/models", params={"endpoint_id": ",".join(f"a/b{i}" for i in range(51))}, headers=keys.alice)
    assert_fal_error(too_many, 422)


async def test_pricing_quotes_the_price_the_ledger_charges(app: App, keys: Keys) -> None:
    prices = (await app.client.get("/v1/models/pricing", params={"endpoint_id": "openfal/utils/echo"}, headers=keys.alice)).json()
    assert prices["prices"] == [{"endpoint_id": "openfal/utils/echo", "unit_price": 0.01, "unit": "request", "currency": "USD"}]
    done = await run(app, keys.alice)
    result = await app.client.get(done["response_url"], headers=keys.alice)
    assert float(result.headers["x-fal-billable-units"]) == 1
    assert await ledger.balance(app.runtime.db, keys.alice_id) == 1_000_000 - 10_000


async def test_estimates_by_units_and_by_the_history_of_calls(app: App, keys: Keys) -> None:
    by_units = await app.client.post(
        "/v1/models/pricing/estimate", json={"estimate_type": "unit_price", "endpoints": {"fal-ai/flux-1/dev": {"unit_quantity": 4}}}, headers=keys.alice
    )
    assert by_units.json() == {"estimate_type": "unit_price", "total_cost": 0.1, "currency": "USD"}
    await run(app, keys.alice)
    historical = await app.client.post(
        "/v1/models/pricing/estimate",
        json={"estimate_type": "historical_api_price", "endpoints": {"openfal/utils/echo": {"call_quantity": 100}}},
        headers=keys.bob,
    )
    assert historical.json()["total_cost"] == pytest.approx(1.0)
    bad = await app.client.post("/v1/models/pricing/estimate", json={"estimate_type": "guess", "endpoints": {}}, headers=keys.alice)
    assert_fal_error(bad, 422)


# -- usage, analytics, requests -----------------------------------------------------


async def test_usage_line_items_are_units_times_unit_price_and_each_key_sees_its_own(app: App, keys: Keys) -> None:
    for _ in range(3):
        await run(app, keys.alice)
    await run(app, keys.bob)
    mine = (await app.client.get("/v1/models/usage", params={"expand": "summary"}, headers=keys.alice)).json()
    assert mine["summary"] == [
        {
            "endpoint_id": "openfal/utils/echo",
            "unit": "request",
            "quantity": 3.0,
            "unit_price": 0.01,
            "cost": 0.03,
            "currency": "USD",
            "auth_method": "api_key",
            "key_id": keys.alice_id,
            "request_count": 3,
        }
    ]
    assert "time_series" not in mine
    series = (await app.client.get("/v1/models/usage", headers=keys.alice)).json()["time_series"]
    assert sum(item["cost"] for bucket in series for item in bucket["results"]) == pytest.approx(0.03)
    assert_fal_error(await app.client.get("/v1/models/usage", params={"key_id": keys.bob_id}, headers=keys.alice), 403)
    everyone = (await app.client.get("/v1/models/usage", params={"expand": "summary"}, headers=keys.admin)).json()["summary"]
    assert {(i["key_id"], i["quantity"]) for i in everyone} == {(keys.alice_id, 3.0), (keys.bob_id, 1.0)}
    just_bob = (await app.client.get("/v1/models/usage", params={"expand": "summary", "key_id": keys.bob_id}, headers=keys.admin)).json()
    assert [i["key_id"] for i in just_bob["summary"]] == [keys.bob_id]


async def test_an_analytics_bucket_holds_exactly_the_requests_with_their_counts_and_percentiles(app: App, keys: Keys) -> None:
    """Three successes, one server error (500) and one cancelled while queued (499, a
    user error) land in today's bucket in the asked timezone; the percentiles are those
    of the requests' own queue waits and run times (within the histograms' stated
    relative error)."""
    zone = ZoneInfo("Asia/Kolkata")
    started = time.time()
    done = [await run(app, keys.alice) for _ in range(3)]
    done.append(await run(app, keys.alice, "/openfal/utils/sleep", {"seconds": 0, "steps": 1, "fail_with": "boom"}))
    # bob's runs hold all eight builtin slots until alice's queued echo is cancelled
    blockers = [(await app.client.post("/openfal/utils/sleep", json={"seconds": 60, "steps": 60}, headers=keys.bob)).json() for _ in range(8)]
    for blocker in blockers:  # all running: a blocker still queued would come after alice's turn
        while (await app.client.get(blocker["status_url"], headers=keys.bob)).json()["status"] != "IN_PROGRESS":
            await asyncio.sleep(0.02)
    queued = (await app.client.post(ECHO, json={}, headers=keys.alice)).json()
    await app.client.put(queued["cancel_url"], headers=keys.alice)
    for blocker in blockers:
        await app.client.put(blocker["cancel_url"], headers=keys.bob)
    done.append(queued)
    for body in [*blockers, queued]:
        await wait_status(app.client, body["status_url"], keys.alice if body is queued else keys.bob)
    records = [await app.runtime.requests.get(d["request_id"]) for d in done]
    day = datetime.fromtimestamp(started, zone).date().isoformat()
    answer = (
        await app.client.get(
            "/v1/models/analytics",
            params={"start": day, "end": datetime.fromtimestamp(time.time() + 1, zone).isoformat(), "timeframe": "day", "timezone": "Asia/Kolkata"},
            headers=keys.alice,
        )
    ).json()
    assert answer["timeframe"] == "day"
    [bucket] = answer["time_series"]
    assert bucket["bucket"] == f"{day}T00:00:00+05:30"
    by_endpoint = {r["endpoint_id"]: r for r in bucket["results"]}
    echo, sleep = by_endpoint["openfal/utils/echo"], by_endpoint["openfal/utils/sleep"]
    assert (echo["request_count"], echo["success_count"], echo["user_error_count"], echo["error_count"]) == (4, 3, 1, 0)
    assert (sleep["request_count"], sleep["success_count"], sleep["user_error_count"], sleep["error_count"]) == (1, 0, 0, 1)
    echoes = [r for r in records if r.endpoint_id == "openfal/utils/echo"]
    waits = [(r.started_at or r.completed_at) - r.created_at for r in echoes]
    runs = [r.completed_at - r.started_at for r in echoes if r.started_at is not None]
    for name, expected in zip(("p50_prepare_duration", "p75_prepare_duration", "p90_prepare_duration"), percentiles(waits), strict=True):
        assert echo[name] == pytest.approx(expected, rel=loghist.RELATIVE_ERROR, abs=2e-6)
    for name, expected in zip(("p50_duration", "p75_duration", "p90_duration"), percentiles(runs), strict=True):
        assert echo[name] == pytest.approx(expected, rel=loghist.RELATIVE_ERROR, abs=2e-6)
    only_counts = (await app.client.get("/v1/models/analytics", params={"expand": "request_count,summary"}, headers=keys.alice)).json()
    assert {r["endpoint_id"]: r for r in only_counts["summary"]}["openfal/utils/echo"] == {"endpoint_id": "openfal/utils/echo", "request_count": 4}


async def test_analytics_buckets_follow_the_timeframe_and_page_by_cursor(app: App, keys: Keys) -> None:
    first = (await app.client.get("/v1/models/analytics", params={"timeframe": "hour", "limit": 10}, headers=keys.alice)).json()
    assert len(first["time_series"]) == 10 and first["has_more"]
    rest = (await app.client.get("/v1/models/analytics", params={"timeframe": "hour", "limit": 100, "cursor": first["next_cursor"]}, headers=keys.alice)).json()
    assert len(first["time_series"]) + len(rest["time_series"]) in (24, 25) and not rest["has_more"]
    assert_fal_error(await app.client.get("/v1/models/analytics", params={"timezone": "Mars/Olympus"}, headers=keys.alice), 422)
    assert_fal_error(await app.client.get("/v1/models/analytics", params={"timeframe": "minute", "start": "2020-01-01"}, headers=keys.alice), 422)


async def test_requests_by_endpoint_lists_a_keys_own_requests_newest_first_in_pages(app: App, keys: Keys) -> None:
    mine = [await run(app, keys.alice, body={"n": i}) for i in range(3)]
    await run(app, keys.bob)
    first = (await app.client.get("/v1/models/requests/by-endpoint", params={"limit": 2, "expand": "payloads"}, headers=keys.alice)).json()
    second = (await app.client.get("/v1/models/requests/by-endpoint", params={"limit": 2, "cursor": first["next_cursor"]}, headers=keys.alice)).json()
    ids = [i["request_id"] for i in first["items"] + second["items"]]
    assert ids == [m["request_id"] for m in reversed(mine)] and not second["has_more"]
    assert first["items"][0]["json_input"] == {"n": 2} and first["items"][0]["json_output"] == {"echo": {"n": 2}}
    assert first["items"][0]["status_code"] == 200 and first["items"][0]["duration"] >= 0
    assert "json_input" not in second["items"][0]
    failures = (await app.client.get("/v1/models/requests/by-endpoint", params={"status": "error"}, headers=keys.alice)).json()
    assert failures["items"] == []
    everyone = (await app.client.get("/v1/models/requests/by-endpoint", headers=keys.admin)).json()
    assert len(everyone["items"]) == 4


async def test_deleting_payloads_forgets_input_and_result_and_is_refused_to_another_key(app: App, keys: Keys) -> None:
    done = await run(app, keys.alice, body={"secret": "x"})
    path = f"/v1/models/requests/{done['request_id']}/payloads"
    assert_fal_error(await app.client.delete(path, headers=keys.bob), 404)
    deleted = await app.client.delete(path, headers=keys.alice)
    assert deleted.json() == {"cdn_delete_results": []}
    assert (await app.client.get(done["response_url"], headers=keys.alice)).status_code == 410
    listed = (await app.client.get("/v1/models/requests/by-endpoint", params={"expand": "payloads"}, headers=keys.alice)).json()
    assert listed["items"][0]["json_input"] == {} and listed["items"][0]["json_output"] is None


# -- keys and billing ---------------------------------------------------------------


async def test_keys_are_created_listed_and_revoked_by_admin_keys_only(app: App, keys: Keys) -> None:
    assert_fal_error(await app.client.get("/v1/keys", headers=keys.alice), 403)
    assert_fal_error(await app.client.post("/v1/keys", json={"alias": "x"}, headers=keys.alice), 403)
    created = (await app.client.post("/v1/keys", json={"alias": "reseller customer", "credit": 2}, headers=keys.admin)).json()
    assert created["key"] == f"{created['key_id']}:{created['key_secret']}"
    new = {"Authorization": f"Key {created['key']}"}
    await run(app, new)
    listed = (await app.client.get("/v1/keys", headers=keys.admin)).json()["keys"]
    entry = next(k for k in listed if k["key_id"] == created["key_id"])
    assert entry["alias"] == "reseller customer" and entry["scope"] == "API" and "key_secret" not in entry
    assert (await app.client.delete(f"/v1/keys/{created['key_id']}", headers=keys.admin)).status_code == 204
    assert (await app.client.post(ECHO, json={}, headers=new)).status_code == 401


async def test_billing_shows_the_callers_balance(app: App, keys: Keys) -> None:
    await run(app, keys.alice)
    billing = (await app.client.get("/v1/account/billing", params={"expand": "credits"}, headers=keys.alice)).json()
    assert billing["key_id"] == keys.alice_id
    assert billing["credits"] == {"current_balance": 0.99, "currency": "USD"}


# -- licences -----------------------------------------------------------------------


async def test_a_commercial_only_key_is_refused_a_non_commercial_model_naming_its_licence(
    app: App, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The catalog's licence decides (here set on the utility endpoints for the test:
    the real families carry their own), as the server-wide OPENFAL_COMMERCIAL_ONLY does."""
    research = Licence("flux-1-dev-non-commercial", "https://example.test/flux-dev-licence", commercial=False)
    apache = Licence("apache-2.0", "https://www.apache.org/licenses/LICENSE-2.0", commercial=True)
    monkeypatch.setitem(CATALOG, "openfal/utils/sleep", replace(CATALOG["openfal/utils/sleep"], licence=research, models=("flux-dev",)))
    monkeypatch.setitem(CATALOG, "openfal/utils/echo", replace(CATALOG["openfal/utils/echo"], licence=apache))
    created = (await app.client.post("/v1/keys", json={"alias": "shop", "commercial_only": True}, headers=keys.admin)).json()
    shop = {"Authorization": f"Key {created['key']}"}
    refused = await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=shop)
    assert_fal_error(refused, 403)
    assert "flux-1-dev-non-commercial" in refused.json()["detail"]
    await run(app, shop)  # apache-2.0: allowed
    assert (await app.client.post("/openfal/utils/sleep", json={"seconds": 0}, headers=keys.alice)).status_code == 200
    listed = (await app.client.get("/v1/models", params={"endpoint_id": "openfal/utils/sleep"}, headers=shop)).json()
    assert listed["models"][0]["metadata"]["licence"]["name"] == "flux-1-dev-non-commercial"
    assert listed["models"][0]["metadata"]["license_type"] == "research"


# -- errors -------------------------------------------------------------------------


async def test_every_error_answer_carries_one_of_fals_error_types(app: App, keys: Keys) -> None:
    client = app.client
    answers = [
        (await client.get("/v1/models"), 401),
        (await client.post(ECHO, content=b"{", headers=keys.alice), 422),
        (await client.get("/openfal/utils/requests/nope/status", headers=keys.alice), 404),
        (await client.get("/fal-ai/unknown-thing", headers=keys.alice), 405),
        (await client.post("/fal-ai/unknown-thing", json={}, headers=keys.alice), 404),
        (await client.get("/v1/keys", headers=keys.alice), 403),
    ]
    for response, status in answers:
        assert_fal_error(response, status)
    failed = await run(app, keys.alice, "/openfal/utils/sleep", {"seconds": 0, "steps": 1, "fail_with": "boom"})
    result = await client.get(failed["response_url"], headers=keys.alice)
    assert_fal_error(result, 500)
    assert result.headers["x-fal-billable-units"] == "0"


async def test_usage_reads_back_after_many_requests_without_double_counting(app: App, keys: Keys) -> None:
    await asyncio.gather(*(run(app, keys.alice) for _ in range(5)))
    summary = (await app.client.get("/v1/models/usage", params={"expand": "summary"}, headers=keys.alice)).json()["summary"]
    assert summary[0]["quantity"] == 5.0 and summary[0]["cost"] == pytest.approx(0.05)
    assert base64.urlsafe_b64decode((await app.client.get("/v1/models", params={"limit": 1}, headers=keys.alice)).json()["next_cursor"]) == b"1"


async def test_month_buckets_of_uneven_length_put_usage_in_the_current_month(app: App, keys: Keys) -> None:
    """Months differ in length (a binary search over the edges, not a division)."""
    await run(app, keys.alice)
    now = datetime.now(ZoneInfo("UTC"))
    params = {"start": f"{now.year - 1}-{now.month:02d}-01", "timeframe": "month", "expand": "time_series"}
    series = (await app.client.get("/v1/models/usage", params=params, headers=keys.alice)).json()["time_series"]
    assert len(series) == 13 and series[-1]["bucket"].startswith(f"{now.year}-{now.month:02d}-01")
    assert [len(b["results"]) for b in series] == [0] * 12 + [1]


async def test_the_reaper_rolls_settled_charges_up_and_the_reports_read_the_same(app: App, keys: Keys) -> None:
    """Reports read raw charge rows until the running server's reaper rolls them into
    day and hour cells (woken here instead of waiting for its idle sweep), then the
    cells: the same counts, line items and (histogram) percentiles either way."""
    for _ in range(3):
        await run(app, keys.alice)
    await run(app, keys.alice, "/openfal/utils/sleep", {"seconds": 0, "steps": 1, "fail_with": "boom"})

    async def reports() -> tuple[Any, Any]:
        usage = (await app.client.get("/v1/models/usage", params={"expand": "summary"}, headers=keys.alice)).json()["summary"]
        analytics = (await app.client.get("/v1/models/analytics", params={"expand": "summary"}, headers=keys.alice)).json()["summary"]
        return usage, analytics

    async def unrolled() -> int:
        async with app.runtime.db.read() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(ledger_table).where(rollup.UNROLLED))).scalar() or 0)

    raw = await reports()
    deadline = time.monotonic() + 30
    while await unrolled():
        assert time.monotonic() < deadline, "the reaper never rolled the charges up"
        app.runtime.notifier.work_available()
        await asyncio.sleep(0.2)
    async with app.runtime.db.read() as conn:
        assert (await conn.execute(sa.select(sa.func.count()).select_from(charge_rollup))).scalar()
    rolled = await reports()
    assert rolled[0] == raw[0]
    assert [{k: v for k, v in r.items() if "duration" not in k} for r in rolled[1]] == [{k: v for k, v in r.items() if "duration" not in k} for r in raw[1]]
    for before, after in zip(raw[1], rolled[1], strict=True):
        for name in ("p50_prepare_duration", "p90_prepare_duration", "p50_duration", "p90_duration"):
            assert after[name] == pytest.approx(before[name], rel=loghist.RELATIVE_ERROR, abs=2e-6)
