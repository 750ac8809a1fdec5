"""The three services start together and answer their liveness checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from tests.integration.conftest import RunningStack


@pytest.mark.parametrize("service", ["auth", "api"])
def test_healthz_answers_200(stack: RunningStack, service: str) -> None:
    base = stack.auth_url if service == "auth" else stack.api_url
    response = httpx.get(f"{base}/healthz", timeout=5)
    assert response.status_code == 200, stack.log(service)[-2000:]
