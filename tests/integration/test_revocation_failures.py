"""Redis unreachable for the revoked-session check: the API answers 503 quickly by default
(``REVOCATION_FAILURE_MODE=deny``) or serves verified tokens (``allow``), and logs either way;
a logout still succeeds and says in the auth log that its Redis write was lost."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from bulwark.devstack.net import free_port

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, register

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="ED", asvs=("V7.4", "V16.5"))]


@pytest.fixture(scope="module")
def black_hole() -> Iterator[str]:
    """A Redis URL whose server accepts connections and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(256)
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"


def test_deny_answers_503_quickly_and_logout_still_succeeds(
    stack_factory: StackFactory, black_hole: str
) -> None:
    own = stack_factory(
        env={
            "api": {"REDIS_URL": black_hole, "REDIS_TIMEOUT_SECONDS": "0.1"},
            "auth": {"REDIS_URL": black_hole, "REDIS_TIMEOUT_SECONDS": "0.1"},
        }
    )
    user = register(own.auth_url)
    tokens = login(own.auth_url, user)
    started = time.monotonic()
    response = httpx.get(f"{own.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    assert time.monotonic() - started < 1.0
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "5"
    assert "redis" not in response.text.lower()

    logout = httpx.post(
        f"{own.auth_url}/v1/auth/logout", headers=bearer(tokens["access_token"], user)
    )
    assert logout.status_code == 204  # ended in Postgres; Redis is re-synced later
    time.sleep(0.3)  # let the log reach the file
    assert "revocation_check_unavailable" in own.log("api")
    assert "session_revocation_unpublished" in own.log("auth")


def test_allow_serves_verified_tokens_and_logs(
    stack: RunningStack, stack_factory: StackFactory
) -> None:
    refused = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    api_only = stack_factory(
        services=["api"],
        databases=stack.databases,
        env={
            "api": {
                "REDIS_URL": refused,
                "REVOCATION_FAILURE_MODE": "allow",
                "JWKS_URL": stack.env["api"]["JWKS_URL"],
                "ISSUER": stack.env["api"]["ISSUER"],
                "RATELIMIT_TARGET": stack.ratelimit_target,
            }
        },
    )
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    me = httpx.get(f"{api_only.api_url}/v1/me", headers=bearer(tokens["access_token"]))
    assert me.status_code == 200
    forged = httpx.get(f"{api_only.api_url}/v1/me", headers=bearer("e30.e30.e30"))
    assert forged.status_code == 401  # the signature is still checked
    time.sleep(0.3)
    assert "revocation_check_unavailable" in api_only.log("api")
