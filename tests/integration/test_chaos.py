"""Redis, Postgres and the rate limiter each restarted under a load of authenticated requests
(issue 9, "Done means"): the stack ends serving, no request hangs, none is answered 500.

The stack runs on a Redis and a Postgres of its own, so both can be stopped and started for
real. Six clients call the API and the auth service (read and write, each with its own
session) throughout; the dependencies go down one after the other with a pause between.
During an outage a request may be refused (503, with Retry-After) but never hang or fail
with a 500; once all is back, every client is served again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from bulwark.devstack.embedded import EmbeddedPostgres

from .conftest import RunningStack, StackFactory, databases_on
from .helpers import MobileUser, bearer, login, register
from .outages import ThrowawayRedis

pytestmark = [pytest.mark.resilience, pytest.mark.security(stride="D", asvs=("V16.5",))]

CLIENTS = 6
# No answer may take longer: the longest wait a request has is one database timeout for a
# connection plus one per statement, or the 1 s rate-limit deadline, plus CPU contention.
HANG = 8.0


@dataclass(eq=False)
class Client(threading.Thread):
    """Calls a mix of authenticated routes in a loop from ``address``; records (status,
    seconds, route)."""

    stack: RunningStack
    user: MobileUser
    token: str
    address: str
    answers: list[tuple[int, float, str]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        # Each client behind the trusted ingress with an address of its own, at about 4
        # calls a second: under the per-IP and per-user limits, so every refusal is an outage.
        headers = {**bearer(self.token, self.user), "X-Forwarded-For": self.address}
        api, auth = self.stack.api_url, self.stack.auth_url
        calls = [
            ("GET", f"{api}/v1/me", None),
            ("POST", f"{api}/v1/notes", {"title": "chaos", "body": "under load"}),
            ("GET", f"{api}/v1/notes?limit=5", None),
            ("GET", f"{auth}/v1/auth/sessions", None),
        ]
        with httpx.Client(timeout=HANG + 5) as http:
            step = 0
            while not self.done.is_set():
                method, url, body = calls[step % len(calls)]
                step += 1
                started = time.monotonic()
                try:
                    answer = http.request(method, url, json=body, headers=headers)
                    status, text = answer.status_code, answer.text
                except httpx.TimeoutException:
                    status, text = 0, "hung"
                took = time.monotonic() - started
                self.answers.append((status, took, f"{method} {url} {text[:300]}"))
                time.sleep(0.25)


@pytest.fixture(scope="module")
def own(
    stack_factory: StackFactory,
    throwaway_redis: ThrowawayRedis,
    throwaway_postgres: EmbeddedPostgres,
) -> RunningStack:
    redis_env = {"REDIS_URL": throwaway_redis.url}
    db_env = {**redis_env, "DATABASE_TIMEOUT_SECONDS": "1", "TRUSTED_PROXIES": "127.0.0.1"}
    return stack_factory(
        databases=databases_on(throwaway_postgres.url),
        env={"ratelimit": redis_env, "auth": db_env, "api": db_env},
    )


def test_restarts_of_redis_postgres_and_the_limiter_under_load(
    own: RunningStack, throwaway_redis: ThrowawayRedis, throwaway_postgres: EmbeddedPostgres
) -> None:
    redis_server, postgres = throwaway_redis, throwaway_postgres
    clients = []
    for index in range(CLIENTS):
        user = register(own.auth_url)
        token = str(login(own.auth_url, user)["access_token"])
        clients.append(Client(own, user, token, f"198.51.100.{index + 1}"))
    for client in clients:
        client.start()
    try:
        time.sleep(1)
        redis_server.stop()
        time.sleep(1)
        redis_server.start()
        time.sleep(2)
        postgres.stop()
        time.sleep(1)
        postgres.start()
        time.sleep(2)
        own.stack.stop_service("ratelimit")
        time.sleep(1)
        own.stack.start_service("ratelimit")
        time.sleep(3)
        served_again = [len(client.answers) for client in clients]
        time.sleep(2)
    finally:
        for client in clients:
            client.done.set()
        for client in clients:
            client.join(timeout=HANG + 10)

    answers = [answer for client in clients for answer in client.answers]
    statuses = {status for status, _, _ in answers}
    assert 0 not in statuses, "a request hung"
    errors = [route for status, _, route in answers if status >= 500 and status != 503]
    assert not errors, (errors, _error_lines(own))
    assert max(seconds for _, seconds, _ in answers) < HANG
    assert 503 in statuses, "the outages were not seen at all"
    # Everything answers again: each client's last calls, after all is back, succeed.
    for client, seen in zip(clients, served_again, strict=True):
        after = [(status, route) for status, _, route in client.answers[seen:]]
        assert after, "a client made no call after the restarts"
        assert all(200 <= status < 300 for status, _ in after), after
    for service in ("api", "auth", "ratelimit"):
        log = own.log(service)
        assert "Traceback" not in log, service
        assert '"event":"unhandled_exception"' not in log, service


def _error_lines(stack: RunningStack) -> dict[str, list[str]]:
    """Each service's error lines and tracebacks: what a failure says (which call broke)."""
    return {
        service: [
            line
            for line in stack.log(service).splitlines()
            if '"level":"error"' in line or "Traceback" in line or "Error" in line[:40]
        ][-8:]
        for service in ("api", "auth", "ratelimit")
    }
