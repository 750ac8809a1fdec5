"""Backoff after failed logins (docs/ratelimit.md, "Backoff protocol"), through the auth
service: blocks per identity and per IP that double on repeat, a success that clears only
the identity, and one IP failing on too many identities.

Short windows and blocks (seconds) keep the test quick; the attempt limits are raised out of
the way. Each scenario uses its own client address (the test plays a trusted proxy).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import random_email, register

pytestmark = pytest.mark.security(stride="SD", asvs=("V2.4", "V6.3"))

BLOCK = 2  # block_seconds of both backoff rules; max_block_seconds is 4 * BLOCK
RULES = f"""
domains:
  - domain: bulwark-auth
    descriptors:
      - key: endpoint
        value: login
        descriptors:
          - key: email
            rate_limit: {{requests: 1000, window_seconds: 900}}
          - key: remote_address
            rate_limit: {{requests: 1000, window_seconds: 900}}
      - key: endpoint
        value: register
        descriptors:
          - key: remote_address
            rate_limit: {{requests: 1000, window_seconds: 900}}
      - key: endpoint
        value: login_failure
        descriptors:
          - key: email
            backoff: {{failures: 2, window_seconds: 60, block_seconds: {BLOCK},
                       max_block_seconds: {4 * BLOCK}}}
          - key: remote_address
            backoff: {{failures: 6, window_seconds: 60, block_seconds: {BLOCK},
                       max_block_seconds: {4 * BLOCK}}}
            descriptors:
              - key: email
                algorithm: distinct
                rate_limit: {{requests: 4, window_seconds: 60}}
"""
WRONG = "Wrong-Password-1!"


@pytest.fixture(scope="module")
def backoff_stack(
    stack_factory: StackFactory, tmp_path_factory: pytest.TempPathFactory
) -> RunningStack:
    rules = tmp_path_factory.mktemp("backoff") / "rules.yaml"
    rules.write_text(RULES)
    return stack_factory(
        services=["ratelimit", "auth"],
        env={
            "ratelimit": {"RATELIMIT_RULES": str(rules)},
            "auth": {"TRUSTED_PROXIES": "127.0.0.1"},
        },
    )


def _login(stack: RunningStack, email: str, password: str, ip: str) -> httpx.Response:
    return httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": email, "password": password},
        headers={"X-Forwarded-For": ip},
    )


def test_an_identity_is_blocked_after_failures_and_a_success_clears_it(
    backoff_stack: RunningStack,
) -> None:
    ip = "198.51.100.10"
    user = register(backoff_stack.auth_url)
    assert _login(backoff_stack, user.email, WRONG, ip).status_code == 401
    assert _login(backoff_stack, user.email.upper(), WRONG, ip).status_code == 401
    # Blocked before the password is verified, even the right one; nothing is counted.
    blocked = _login(backoff_stack, user.email, user.password, ip)
    assert blocked.status_code == 429
    assert BLOCK <= int(blocked.headers["retry-after"]) <= BLOCK + 1
    assert '"login_failure-email";r=0' in blocked.headers["RateLimit"]
    assert '"login_failure-email";q=2;w=60' in blocked.headers["RateLimit-Policy"]
    # Blocked from another address too: the block belongs to the identity.
    assert _login(backoff_stack, user.email, user.password, "198.51.100.11").status_code == 429

    time.sleep(BLOCK + 0.3)
    assert _login(backoff_stack, user.email, WRONG, ip).status_code == 401
    assert _login(backoff_stack, user.email, user.password, ip).status_code == 200
    # The success cleared that failure: one more failure does not reach two.
    assert _login(backoff_stack, user.email, WRONG, ip).status_code == 401
    assert _login(backoff_stack, user.email, user.password, ip).status_code == 200


def test_a_repeat_block_is_twice_as_long(backoff_stack: RunningStack) -> None:
    ip, email = "198.51.100.20", random_email()
    for _ in range(2):
        assert _login(backoff_stack, email, WRONG, ip).status_code == 401
    first = _login(backoff_stack, email, WRONG, ip)
    assert first.status_code == 429
    assert BLOCK <= int(first.headers["retry-after"]) <= BLOCK + 1
    time.sleep(BLOCK + 0.3)
    for _ in range(2):
        assert _login(backoff_stack, email, WRONG, ip).status_code == 401
    second = _login(backoff_stack, email, WRONG, ip)
    assert second.status_code == 429
    assert 2 * BLOCK <= int(second.headers["retry-after"]) <= 2 * BLOCK + 1


def test_an_ip_is_blocked_after_failures_and_a_success_does_not_clear_it(
    backoff_stack: RunningStack,
) -> None:
    ip = "198.51.100.30"
    user = register(backoff_stack.auth_url)
    emails = [random_email() for _ in range(3)]
    for email in [emails[0], emails[0], emails[1], emails[1], emails[2]]:
        assert _login(backoff_stack, email, WRONG, ip).status_code == 401
    # A success from that IP clears the user's failures, not the IP's five.
    assert _login(backoff_stack, user.email, user.password, ip).status_code == 200
    assert _login(backoff_stack, emails[2], WRONG, ip).status_code == 401  # the sixth
    blocked = _login(backoff_stack, user.email, user.password, ip)
    assert blocked.status_code == 429
    assert '"login_failure-remote_address";r=0' in blocked.headers["RateLimit"]
    # Another address is not affected.
    assert _login(backoff_stack, user.email, user.password, "198.51.100.31").status_code == 200


def test_one_ip_failing_on_many_identities_is_refused_new_ones(
    backoff_stack: RunningStack,
) -> None:
    ip = "198.51.100.40"
    tried = [random_email() for _ in range(4)]
    for email in tried:
        assert _login(backoff_stack, email, WRONG, ip).status_code == 401
    user = register(backoff_stack.auth_url)
    refused = _login(backoff_stack, user.email, user.password, ip)  # a fifth identity
    assert refused.status_code == 429
    # An identity already in the set is still judged by its own backoff only.
    assert _login(backoff_stack, tried[0], WRONG, ip).status_code == 401
    assert _login(backoff_stack, user.email, user.password, "198.51.100.41").status_code == 200


@pytest.mark.security(stride="S", asvs=("V15.4",))
def test_parallel_logins_from_one_ip_cannot_outrun_the_failure_limits(
    backoff_stack: RunningStack,
) -> None:
    """Failures are reserved before the password check (docs/ratelimit.md): a burst of
    parallel logins on new identities from one IP gets exactly the distinct-identity limit
    (4) through to the password check, not every attempt that raced past a shared count."""
    ip = "198.51.100.50"
    emails = [random_email() for _ in range(24)]
    with ThreadPoolExecutor(max_workers=len(emails)) as pool:
        codes = list(
            pool.map(lambda email: _login(backoff_stack, email, WRONG, ip).status_code, emails)
        )
    assert sorted(codes) == [401] * 4 + [429] * 20


def test_a_success_gives_its_reservation_back(backoff_stack: RunningStack) -> None:
    """A successful login leaves no failure behind: not in the IP's distinct identities (4)
    and not in the IP's failures (6)."""
    ip = "198.51.100.60"
    user = register(backoff_stack.auth_url)
    for _ in range(3):
        ok = _login(backoff_stack, user.email, user.password, ip)
        assert ok.status_code == 200
        # The failure counts of the check are stale after a success: only attempts remain.
        assert "login_failure" not in ok.headers["RateLimit"] + ok.headers["RateLimit-Policy"]
        assert '"login-email"' in ok.headers["RateLimit"]
    # Had the successes kept their reservations, the IP would have failed on 4 identities
    # counting the user's, and 3 times already: the 4th new identity would be refused.
    for email in [random_email() for _ in range(4)]:
        assert _login(backoff_stack, email, WRONG, ip).status_code == 401
    assert _login(backoff_stack, random_email(), WRONG, ip).status_code == 429  # now full
