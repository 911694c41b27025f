"""The operator's console in headless Chromium against a real ``openfal serve --demo``:
it loads with an admin key, shows the numbers of the requests this test made (per
endpoint, and the revenue of the key that paid), and a key created there works."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests.e2e.conftest import Server, create_key, start_server
from tests.playground.conftest import shot
from tests.support import ROOT

pytestmark = pytest.mark.slow  # a server process and a browser
UTILS = ("openfal/utils/echo", "openfal/utils/sleep")


def admin_key(data_dir) -> str:  # noqa: ANN001
    out = subprocess.run(
        [sys.executable, "-m", "openfal", "--data-dir", str(data_dir), "keys", "create", "--name", "operator", "--admin"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A demo server with priced utility endpoints, an admin key and a customer key; its
    workers are the "utils" pool (OPENFAL_POOLS, claiming only its endpoints)."""
    data_dir = tmp_path_factory.mktemp("console")
    customer = create_key(data_dir, "customer")
    operator = admin_key(data_dir)
    env = {
        "OPENFAL_PRICES": '{"openfal/utils/*": {"per_request": 0.01}}',
        "OPENFAL_POOLS": json.dumps({"utils": [UTILS[0], UTILS[1]]}),
        "OPENFAL_WORKER_MODELS": ",".join(UTILS),
    }
    server = start_server(data_dir, "--demo", env=env)
    server.key = operator
    server.customer = customer  # type: ignore[attr-defined]
    yield server
    server.process.stop()


def run(server: Server, key: str, path: str, body: dict) -> int:
    headers = {"Authorization": f"Key {key}"}
    submitted = httpx.post(f"{server.url}{path}", json=body, headers=headers).json()
    deadline = time.monotonic() + 30
    while httpx.get(submitted["status_url"], headers=headers).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return httpx.get(submitted["response_url"], headers=headers).status_code


def test_the_console_shows_the_requests_made_and_a_key_created_there_works(page: Page, server: Server, artifacts) -> None:  # noqa: ANN001
    customer = server.customer  # type: ignore[attr-defined]
    assert [run(server, customer, "/openfal/utils/echo", {"i": i}) for i in range(3)] == [200, 200, 200]
    assert run(server, customer, "/openfal/utils/sleep", {"seconds": 0, "steps": 1, "fail_with": "x"}) == 500
    customer_id = customer.split(":")[0]

    page.goto(f"{server.url}/console")
    expect(page.locator("#banner")).to_contain_text("admin key")
    page.get_by_label("Admin key").fill(server.key)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator("body[data-loaded=true]")).to_be_attached()

    expect(page.locator("#total-requests")).to_have_text("4")
    expect(page.locator("#total-success")).to_have_text("3")
    expect(page.locator("#total-errors")).to_have_text("1")
    expect(page.locator("#total-revenue")).to_have_text("$0.03")
    echo = page.locator('#requests-table tr[data-endpoint="openfal/utils/echo"] td')
    expect(echo.nth(1)).to_have_text("3")
    expect(page.locator("#requests-chart svg rect").first).to_be_attached()
    expect(page.locator("#revenue-table")).to_contain_text(customer_id)
    utils = page.locator('#queues-table tr[data-pool="utils"] td')
    expect(page.locator("#queues-title")).to_have_text("Queues per worker pool")
    expect(utils.nth(1)).to_have_text("0")  # nothing waits
    expect(utils.nth(4)).to_have_text("1")  # the server's worker claims only the pool's endpoints
    expect(utils.nth(8)).to_have_text(", ".join(UTILS))
    expect(page.locator("#workers-table")).to_contain_text("builtin")
    expect(page.locator(f'#keys-table tr[data-key="{customer_id}"]')).to_contain_text("customer")
    shot(page, artifacts, "console", full_page=True)

    page.get_by_label("Name").fill("from the console")
    page.get_by_label("Credit ($)").fill("1")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-secret")).to_be_visible()
    created = page.locator("#new-secret-value").inner_text()
    assert run(server, created, "/openfal/utils/echo", {}) == 200
    row = page.locator(f'#keys-table tr[data-key="{created.split(":")[0]}"]')
    expect(row).to_contain_text("$1.00")

    row.get_by_role("button", name="Top up $10").click()
    expect(row).to_contain_text("$10.99")
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert httpx.post(f"{server.url}/openfal/utils/echo", json={}, headers={"Authorization": f"Key {created}"}).status_code == 401
