"""The playground in headless Chromium (Debian's package, driven by Playwright) against a
real ``openfal serve --demo`` process."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, sync_playwright

from tests.e2e.conftest import Server, create_key, start_server
from tests.support import ROOT

#: ``OPENFAL_TEST_CHROMIUM``, else the ``chromium`` on PATH (scripts/test installs Debian's when there is none)
CHROMIUM = os.environ.get("OPENFAL_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
ARTIFACTS = ROOT / "test-artifacts" / "playground"
VIEWPORT = {"width": 1360, "height": 900}


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The demo server with one builtin slot, so a second sleep waits in the queue."""
    data_dir = tmp_path_factory.mktemp("playground")
    key = create_key(data_dir, "playground")
    server = start_server(data_dir, "--demo", env={"OPENFAL_CONCURRENCY": '{"local": 1, "builtin": 1}'})
    server.key = key
    yield server
    server.process.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # module scope: Playwright's sync API runs an event loop in this thread while it is
    # open, which the asyncio tests of later modules must not find
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # scripts/test installs Debian's chromium; a missing browser is a failure, not a skip
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found; run the tests with scripts/test, or apt-get install -y chromium, or set OPENFAL_TEST_CHROMIUM")
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Errors(list[str]):
    """Uncaught page errors; every test ends by checking there were none."""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, color_scheme="light")
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors = Errors()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: _console(errors, msg))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


def _console(errors: list[str], msg: ConsoleMessage) -> None:
    # failed fetches (401, 422 on purpose) log "Failed to load resource"; script errors do not
    if msg.type == "error" and "Failed to load resource" not in msg.text:
        errors.append(msg.text)


def shot(page: Page, artifacts: Path, name: str, **kwargs: Any) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / f"{name}.png"), **kwargs)
