"""Load alone, with every part up, never lets a limit be exceeded (issue 9, item 2).

Past ``HTTP_MAX_CONCURRENCY`` requests in flight the others wait their turn (a request's
deadlines start with it), and past ``HTTP_QUEUE_TIMEOUT_SECONDS`` of waiting they are shed
with an explicit 503 (``overloaded``): no decision the service does make is late.

600 concurrent ``GET /v1/me`` of one user, from two client addresses (behind the trusted
ingress the test plays), against the packaged limit of 300 per user per minute: at most 300
are served. No decision may be made by a failure mode (the limiter and Redis are up, only
busy), and every refusal's ``Retry-After`` stays inside the window its RateLimit fields
report.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import Counter

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, register
from .prometheus import Series, scrape, value

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="D", asvs=("V2.4",))]

REQUESTS = 600
CLIENTS = 48
USER_LIMIT = 300  # per minute, services/ratelimit/src/bulwark/ratelimit/rules.yaml
ADDRESSES = ("198.51.100.1", "198.51.100.2")
SESSIONS_LIMIT = 120  # auth's endpoint=sessions per user and minute


@pytest.fixture(scope="module")
def own(stack_factory: StackFactory) -> RunningStack:
    proxied = {"TRUSTED_PROXIES": "127.0.0.1"}
    return stack_factory(env={"api": proxied, "auth": proxied})


def test_a_user_limit_holds_under_a_burst_from_two_addresses(own: RunningStack) -> None:
    user = register(own.auth_url)
    headers = bearer(login(own.auth_url, user)["access_token"], user)
    _text, before = scrape(own, "api")
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def client(index: int) -> None:
        forwarded = {"X-Forwarded-For": ADDRESSES[index % 2]}
        with httpx.Client(timeout=30) as http:
            for _ in range(REQUESTS // CLIENTS):
                answer = http.get(f"{own.api_url}/v1/me", headers={**headers, **forwarded})
                with lock:
                    answers.append(answer)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    statuses = Counter(answer.status_code for answer in answers)
    assert sum(statuses.values()) == REQUESTS // CLIENTS * CLIENTS
    assert set(statuses) <= {200, 429}, (statuses, _warnings(own))
    assert statuses[200] == USER_LIMIT, statuses
    _text, after = scrape(own, "api")
    unanswered = sum(
        v for (name, _labels), v in after.items() if name == "bulwark_ratelimit_unanswered_total"
    ) - sum(
        v for (name, _labels), v in before.items() if name == "bulwark_ratelimit_unanswered_total"
    )
    assert unanswered == 0, "a decision was made by a failure mode under load alone"
    assert value(after, "bulwark_ratelimit_calls_total") > value(
        before, "bulwark_ratelimit_calls_total"
    )
    for answer in answers:
        if answer.status_code == 429:
            resets = [int(t) for t in re.findall(r";t=(\d+)", answer.headers["ratelimit"])]
            assert 1 <= int(answer.headers["retry-after"]) <= max(resets), answer.headers


def _warnings(stack: RunningStack) -> list[str]:
    """The API's last warning lines: what a failure says (which deadline or check)."""
    return [line for line in stack.log("api").splitlines() if '"warning"' in line][-5:]


def _unanswered(series: Series) -> float:
    return sum(v for (name, _), v in series.items() if name == "bulwark_ratelimit_unanswered_total")


def test_a_thousand_concurrent_calls_never_outrun_a_limit_or_make_a_late_decision(
    own: RunningStack,
) -> None:
    """1000 concurrent session calls of one user (limit 120 a minute) from ten addresses:
    at most 120 served, the rest refused by the limit (429) or shed by admission control
    (503 ``overloaded``); no rate-limit decision made by a failure mode."""
    user = register(own.auth_url)
    headers = bearer(login(own.auth_url, user)["access_token"], user)
    _text, before = scrape(own, "auth")

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            calls = [
                client.get(
                    f"{own.auth_url}/v1/auth/sessions",
                    headers={**headers, "X-Forwarded-For": f"198.51.100.{i % 10 + 1}"},
                )
                for i in range(1000)
            ]
            return list(await asyncio.gather(*calls))

    answers = asyncio.run(burst())
    statuses = Counter(answer.status_code for answer in answers)
    assert set(statuses) <= {200, 429, 503}, statuses
    assert statuses[200] == SESSIONS_LIMIT, statuses  # the limit, all of it, and no more
    for answer in answers:
        if answer.status_code == 503:
            assert answer.json()["detail"] == "The service is busy; retry shortly."
    _text, after = scrape(own, "auth")
    assert _unanswered(after) == _unanswered(before), "a decision was made by a failure mode"
