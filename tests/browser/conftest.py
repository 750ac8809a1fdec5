"""Fixtures of the browser tests (marker ``browser``, ``make test-browser``): a real headless
browser, Debian's chromium at ``/usr/bin/chromium`` (``make browser`` installs it), driven by
Playwright for Python, in front of the real services that ``stack_factory`` starts.

Playwright never downloads a browser here: it launches that executable with the flags below.
Every page opens at a phone's width (390 x 844 CSS pixels), and ``screenshot`` keeps what it
shows in ``docs/screenshots/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

# The integration tests' fixtures (real Postgres and Redis, stacks of real services).
from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    database_server_url,
    docker_available,
    embedded_dir,
    redis_url,
    session_stack_factory,
    stack_factory,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # as root (CI), chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls to Google's services: only loopback is ours
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium, headless, for one test. The tests fail (not skip) where ``make
    browser`` did not install it, since ``make test-browser`` runs that first.

    One per test, because Playwright's sync API marks its event loop as running on the test's
    thread for as long as it is open, and ``stack_factory`` (which creates databases with
    ``asyncio.run``) then refuses to start: a test module's stacks are module fixtures, made
    before this one is. Running the factory on another thread is no way out: its services get
    SIGKILL when the thread that started them ends (``PR_SET_PDEATHSIG``)."""
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: run make browser"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page of its own context (no cookies shared between tests), at a phone's width."""
    context = browser.new_context(viewport=PHONE)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def screenshot(page: Page, name: str) -> Path:
    """Keep what ``page`` shows (the whole page) as ``docs/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path
