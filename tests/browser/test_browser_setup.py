"""The browser itself: Debian's chromium, driven by Playwright, loads a page that a real auth
service serves, and a screenshot of it is a PNG of a phone's width."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.integration.conftest import RunningStack, StackFactory

from .conftest import PHONE

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def auth(stack_factory: StackFactory) -> RunningStack:
    """An auth service alone."""
    return stack_factory(services=("auth",))


def test_chromium_opens_a_page_of_the_auth_service(
    auth: RunningStack, page: Page, tmp_path: Path
) -> None:
    response = page.goto(f"{auth.auth_url}/healthz")
    assert response is not None
    assert response.status == 200
    assert '"ok"' in page.content()

    image = page.screenshot(path=tmp_path / "healthz.png")
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    assert int.from_bytes(image[16:20], "big") == PHONE["width"]  # IHDR: width in pixels
