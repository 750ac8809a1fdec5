"""Prometheus metrics of the real services (docs/metrics.md): one mobile session with a
failed login, a rate-limited login, API calls and a refresh-token reuse, then every
service's metrics endpoint is scraped and the series the alert rules read must have moved,
with the right labels and nothing personal in any label.

The module starts a stack of its own: on the shared one, the failed logins of other tests
from the same address may already have reached the per-IP failure limits, and a 401 expected
here would be a 429. Counters are still compared before and after the scenario.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, refresh, register
from .prometheus import Series, scrape, value

SERVICES = ("api", "auth", "ratelimit")
WRONG = "Wrong-Password-1!"
SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
ALERT_RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "bulwark-alerts.yml"


@dataclass
class Session:
    """What the module's scenario did, and the endpoints before and after it."""

    before: dict[str, Series]
    after: dict[str, Series]
    texts: dict[str, str]
    secrets: list[str]

    def delta(self, service: str, name: str, **labels: str) -> float:
        """How much the sample moved during the scenario."""
        return value(self.after[service], name, **labels) - value(
            self.before[service], name, **labels
        )


def _eventually(check: Callable[[], bool], seconds: float = 3.0) -> None:
    """Wait until ``check()`` holds: a service records a request just after answering it."""
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stack(stack_factory: StackFactory) -> RunningStack:
    """A stack of this module's own (fresh rate-limit counters)."""
    return stack_factory()


@pytest.fixture(scope="module")
def session(stack: RunningStack) -> Session:
    """Play the scenario once for the module's tests."""
    before = {svc: scrape(stack, svc)[1] for svc in SERVICES}

    # Five wrong passwords (401), then the sixth attempt is over the per-email limit (429).
    blocked = register(stack.auth_url)
    for _ in range(5):
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": blocked.email, "password": WRONG},
            headers=blocked.headers,
        )
        assert response.status_code == 401, response.text
    response = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": blocked.email, "password": blocked.password},
        headers=blocked.headers,
    )
    assert response.status_code == 429, response.text

    # API calls, then a refresh-token reuse: RT1 -> RT2 -> RT3, then RT1 again.
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    access_token, rt1 = str(tokens["access_token"]), str(tokens["refresh_token"])
    assert httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token, user)).is_success
    created = httpx.post(
        f"{stack.api_url}/v1/notes",
        json={"title": "Metrics", "body": "labels"},
        headers=bearer(access_token, user),
    )
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]
    read = httpx.get(f"{stack.api_url}/v1/notes/{note_id}", headers=bearer(access_token, user))
    assert read.status_code == 200, read.text
    assert httpx.get(f"{stack.api_url}/no/such/{user.email}").status_code == 404
    second = refresh(stack.auth_url, rt1, user)
    assert second.status_code == 200, second.text
    rt2 = second.json()["refresh_token"]
    third = refresh(stack.auth_url, rt2, user)
    assert third.status_code == 200, third.text
    reused = refresh(stack.auth_url, rt1, user)
    assert reused.status_code == 400, reused.text
    assert reused.json()["error"] == "invalid_grant"

    texts: dict[str, str] = {}
    after: dict[str, Series] = {}

    def scraped_all() -> bool:
        for svc in SERVICES:
            texts[svc], after[svc] = scrape(stack, svc)
        # The last request each HTTP service answered is in (a service records a request
        # just after answering it).
        last = {
            "api": {"route": "<unmatched>", "method": "GET", "status_code": "404"},
            "auth": {"route": "/oauth2/token", "method": "POST", "status_code": "400"},
        }
        name = "bulwark_http_server_requests_total"
        return all(
            value(after[svc], name, **labels) > value(before[svc], name, **labels)
            for svc, labels in last.items()
        )

    _eventually(scraped_all)
    return Session(
        before=before,
        after=after,
        texts=texts,
        secrets=[
            access_token,
            rt1,
            rt2,
            third.json()["refresh_token"],
            user.email,
            blocked.email,
            user.user_id,
            blocked.user_id,
            user.device_id,
            note_id,
            "127.0.0.1",
        ],
    )


@pytest.mark.security(stride="I", asvs=("V13.4",))
def test_the_public_ports_do_not_serve_metrics(stack: RunningStack) -> None:
    for url in (stack.api_url, stack.auth_url):
        response = httpx.get(f"{url}/metrics")
        assert response.status_code == 404
        assert "bulwark_" not in response.text


@pytest.mark.security(stride="I", asvs=("V16.2",))
def test_http_requests_are_counted_by_route_template_method_and_status(session: Session) -> None:
    me = {"route": "/v1/me", "method": "GET", "status_code": "200"}
    assert session.delta("api", "bulwark_http_server_requests_total", **me) >= 1
    note = {"route": "/v1/notes/{note_id}", "method": "GET", "status_code": "200"}
    assert session.delta("api", "bulwark_http_server_requests_total", **note) >= 1
    created = {"route": "/v1/notes", "method": "POST", "status_code": "201"}
    assert session.delta("api", "bulwark_http_server_requests_total", **created) >= 1
    unmatched = {"route": "<unmatched>", "method": "GET", "status_code": "404"}
    assert session.delta("api", "bulwark_http_server_requests_total", **unmatched) >= 1
    login_401 = {"route": "/v1/auth/login", "method": "POST", "status_code": "401"}
    assert session.delta("auth", "bulwark_http_server_requests_total", **login_401) >= 5


def test_http_durations_are_a_histogram_in_seconds(session: Session) -> None:
    me = {"route": "/v1/me", "method": "GET", "status_code": "200"}
    count = session.delta("api", "bulwark_http_server_duration_seconds_count", **me)
    assert count >= 1
    assert 0 < session.delta("api", "bulwark_http_server_duration_seconds_sum", **me) < 10 * count
    # Cumulative buckets from 5 ms to 10 s, +Inf equal to the count.
    inf = value(
        session.after["api"], "bulwark_http_server_duration_seconds_bucket", le="+Inf", **me
    )
    assert inf == value(session.after["api"], "bulwark_http_server_duration_seconds_count", **me)
    for le in ("0.005", "0.1", "1.0", "10.0"):
        assert (
            "bulwark_http_server_duration_seconds_bucket",
            frozenset({**me, "le": le}.items()),
        ) in (session.after["api"])
    assert "# TYPE bulwark_http_server_duration_seconds histogram" in session.texts["api"]
    assert "# TYPE bulwark_http_server_requests_total counter" in session.texts["api"]


@pytest.mark.security(stride="R", asvs=("V16.3",))
def test_login_failures_are_counted_by_reason(session: Session) -> None:
    failures = "bulwark_login_failures_total"
    assert session.delta("auth", failures, reason="invalid_credentials") >= 5
    assert session.delta("auth", failures, reason="rate_limited") >= 1


@pytest.mark.security(stride="R", asvs=("V16.3",))
def test_a_refresh_token_reuse_is_counted(session: Session) -> None:
    assert session.delta("auth", "bulwark_refresh_reuse_detections_total") >= 1


def test_ratelimit_calls_and_decisions_are_counted_by_rule_and_result(session: Session) -> None:
    ok = {"grpc_method": SHOULD_RATE_LIMIT, "grpc_code": "OK"}
    assert session.delta("ratelimit", "bulwark_grpc_server_requests_total", **ok) >= 10
    assert session.delta("ratelimit", "bulwark_grpc_server_duration_seconds_count", **ok) >= 10
    decisions = "bulwark_ratelimit_decisions_total"
    over = {"domain": "bulwark-auth", "rule": "endpoint=login/email", "result": "over_limit"}
    assert session.delta("ratelimit", decisions, **over) >= 1
    for rule in ("user_id", "remote_address"):
        api_ok = {"domain": "bulwark-api", "rule": rule, "result": "ok"}
        assert session.delta("ratelimit", decisions, **api_ok) >= 3


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_no_label_holds_an_email_an_address_a_token_or_an_id(session: Session) -> None:
    labels = {
        (name, label, text)
        for series in session.after.values()
        for name, pairs in series
        for label, text in pairs
    }
    assert labels, "nothing scraped"
    for name, label, text in labels:
        assert "@" not in text, (name, label, text)
        for secret in session.secrets:
            assert secret not in text, (name, label, secret)
    for text in session.texts.values():
        for secret in session.secrets:
            assert secret not in text


@pytest.mark.security(stride="R", asvs=("V16.2",))
def test_every_series_the_alert_rules_read_is_exported(session: Session) -> None:
    read = set(re.findall(r"\bbulwark_[a-z_]+", ALERT_RULES.read_text()))
    assert len(read) >= 7
    exported = {name for series in session.after.values() for name, _labels in series}
    assert read <= exported, read - exported
