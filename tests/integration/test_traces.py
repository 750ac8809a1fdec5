"""Traces: one mobile request is one trace across the API, the rate limiter and Postgres (and
the auth service for a login), exported over OTLP/HTTP to a receiver run by the test; a
client's ``traceparent`` is never adopted; nothing secret is exported.

The stack exports with a one-minute batch delay, and the receiver is read only after the stack
has been stopped: every span found therefore also proves the flush at shutdown.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from .conftest import RunningStack, StackFactory
from .helpers import bearer, login, new_request_id, register
from .otlp_receiver import OtlpReceiver, ReceivedSpan

# What a hostile (or merely instrumented) app sends: W3C trace context of its own choosing,
# sampled, with a tracestate.
CLIENT_TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN_ID = "b7ad6b7169203331"
LOGIN_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
LOGIN_SPAN_ID = "00f067aa0ba902b7"


def _traceparent(trace_id: str, span_id: str) -> dict[str, str]:
    return {"traceparent": f"00-{trace_id}-{span_id}-01", "tracestate": "evil=1"}


@dataclass
class Session:
    """What the scripted session did, and what the receiver got once the stack stopped."""

    spans: list[ReceivedSpan]
    raw: bytes
    secrets: dict[str, str]
    list_request_id: str
    login_request_id: str
    note_id: str
    api_log: str

    def server_span(self, service: str, request_id: str) -> ReceivedSpan:
        found = [
            s
            for s in self.spans
            if s.service == service
            and s.kind == "SERVER"
            and s.attributes.get("bulwark.request_id") == request_id
        ]
        assert len(found) == 1, f"{service} server spans for {request_id}: {found}"
        return found[0]

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        return [s for s in self.spans if s.trace_id == trace_id]


@pytest.fixture(scope="module")
def session(stack_factory: StackFactory) -> Iterator[Session]:
    """A traced stack plays register, login, create and list notes; then it is stopped."""
    with OtlpReceiver() as receiver:
        otel = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "60000",  # nothing leaves before the shutdown flush
        }
        running: RunningStack = stack_factory(env={"ratelimit": otel, "auth": otel, "api": otel})
        try:
            user = register(running.auth_url)
            login_request_id = new_request_id("login")
            response = httpx.post(
                f"{running.auth_url}/v1/auth/login",
                json={"email": user.email, "password": user.password},
                headers={
                    **user.headers,
                    **_traceparent(LOGIN_TRACE_ID, LOGIN_SPAN_ID),
                    "X-Request-ID": login_request_id,
                },
            )
            assert response.status_code == 200, response.text
            tokens = response.json()
            again = login(running.auth_url, user)  # a second family, to have its tokens too
            created = httpx.post(
                f"{running.api_url}/v1/notes",
                json={"title": "Groceries", "body": "milk"},
                headers=bearer(tokens["access_token"], user),
            )
            assert created.status_code == 201, created.text
            note_id = created.json()["id"]
            read = httpx.get(
                f"{running.api_url}/v1/notes/{note_id}",
                headers=bearer(tokens["access_token"], user),
            )
            assert read.status_code == 200, read.text
            # A token in the query string (refused: 401) must not reach a span either.
            httpx.get(f"{running.api_url}/v1/me", params={"access_token": again["access_token"]})
            list_request_id = new_request_id("list")
            listed = httpx.get(
                f"{running.api_url}/v1/notes",
                params={"limit": "5"},
                headers={
                    **bearer(tokens["access_token"], user),
                    **_traceparent(CLIENT_TRACE_ID, CLIENT_SPAN_ID),
                    "X-Request-ID": list_request_id,
                },
            )
            assert listed.status_code == 200, listed.text
        finally:
            running.stack.stop()  # SIGTERM: each service flushes its spans before exiting
        yield Session(
            spans=receiver.received(),
            raw=receiver.raw(),
            secrets={
                "password": user.password,
                "email": user.email,
                "access token": str(tokens["access_token"]),
                "refresh token": str(tokens["refresh_token"]),
                "query-string token": str(again["access_token"]),
            },
            list_request_id=list_request_id,
            login_request_id=login_request_id,
            note_id=note_id,
            api_log=running.log("api"),
        )


def test_an_api_request_is_one_trace_across_api_ratelimit_and_postgres(session: Session) -> None:
    root = session.server_span("bulwark-api", session.list_request_id)
    assert root.name == "GET /v1/notes"
    assert root.parent_span_id == ""
    spans = session.trace(root.trace_id)
    assert {s.service for s in spans} == {"bulwark-api", "bulwark-ratelimit"}
    postgres = [
        s
        for s in spans
        if s.service == "bulwark-api"
        and "postgresql" in (s.attributes.get("db.system"), s.attributes.get("db.system.name"))
    ]
    assert any(s.name == "SELECT" for s in postgres), [s.name for s in spans]
    # The limiter's server span is the child of the API's client span: the context went
    # through the gRPC metadata.
    (client,) = [s for s in spans if s.kind == "CLIENT" and s.name.endswith("/ShouldRateLimit")]
    (server,) = [s for s in spans if s.service == "bulwark-ratelimit" and s.kind == "SERVER"]
    assert client.service == "bulwark-api"
    assert server.parent_span_id == client.span_id
    assert (
        server.name == client.name == "envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    )


def test_a_login_is_one_trace_across_auth_ratelimit_and_postgres(session: Session) -> None:
    root = session.server_span("bulwark-auth", session.login_request_id)
    assert root.name == "POST /v1/auth/login"
    spans = session.trace(root.trace_id)
    assert {s.service for s in spans} == {"bulwark-auth", "bulwark-ratelimit"}
    assert any(s.service == "bulwark-ratelimit" and s.kind == "SERVER" for s in spans)
    assert any(s.service == "bulwark-auth" and s.name == "SELECT" for s in spans)


@pytest.mark.security(stride="T", asvs=("V4.1",))
@pytest.mark.parametrize(
    ("service", "request_attr", "client_trace", "client_span"),
    [
        ("bulwark-api", "list_request_id", CLIENT_TRACE_ID, CLIENT_SPAN_ID),
        ("bulwark-auth", "login_request_id", LOGIN_TRACE_ID, LOGIN_SPAN_ID),
    ],
)
def test_a_client_traceparent_is_linked_never_adopted(
    session: Session, service: str, request_attr: str, client_trace: str, client_span: str
) -> None:
    root = session.server_span(service, getattr(session, request_attr))
    assert root.trace_id != client_trace
    assert root.parent_span_id == ""
    assert root.links == [(client_trace, client_span, {"bulwark.untrusted_parent": True})]
    assert not [s for s in session.spans if s.trace_id == client_trace]


def test_span_names_are_route_templates(session: Session) -> None:
    names = {s.name for s in session.spans if s.kind == "SERVER"}
    assert "GET /v1/notes/{note_id}" in names
    assert "POST /v1/notes" in names
    assert not [n for n in names if session.note_id in n]
    read = [s for s in session.spans if s.name == "GET /v1/notes/{note_id}"]
    assert read[0].attributes["http.route"] == "/v1/notes/{note_id}"
    assert read[0].attributes["http.response.status_code"] == 200


@pytest.mark.security(stride="I", asvs=("V14.2",))
def test_no_secret_and_no_request_data_is_exported(session: Session) -> None:
    assert session.raw, "nothing was exported"
    for what, secret in session.secrets.items():
        assert secret.encode() not in session.raw, f"the {what} was exported"
    assert b"Bearer" not in session.raw
    assert not [s for s in session.spans if "db.statement.parameters" in s.attributes]
    raw_request = ("http.request.header.", "url.full", "url.path", "url.query", "http.url")
    for span in session.spans:
        assert not [k for k in span.attributes if k.startswith(raw_request)], span


def test_the_access_line_carries_the_exported_trace_id(session: Session) -> None:
    root = session.server_span("bulwark-api", session.list_request_id)
    lines = [json.loads(raw) for raw in session.api_log.splitlines() if raw.startswith("{")]
    (access,) = [
        line
        for line in lines
        if line.get("request_id") == session.list_request_id and "latency_ms" in line
    ]
    if "trace_id" not in access:
        pytest.skip("the access line has no trace_id field yet (logging.py, issue 5 logs part)")
    assert access["trace_id"] == root.trace_id
    assert access["span_id"] == root.span_id


def test_without_an_exporter_the_limiter_still_logs_the_requests_trace_id(
    stack: RunningStack,
) -> None:
    """The default stack exports nothing; spans are still made, and propagated."""
    user = register(stack.auth_url)
    tokens = login(stack.auth_url, user)
    request_id = new_request_id("me")
    headers = {**bearer(tokens["access_token"], user), "X-Request-ID": request_id}
    assert httpx.get(f"{stack.api_url}/v1/me", headers=headers).status_code == 200
    api = [json.loads(raw) for raw in stack.log("api").splitlines() if raw.startswith("{")]
    (access,) = [x for x in api if x.get("request_id") == request_id and "latency_ms" in x]
    if "trace_id" not in access:
        pytest.skip("the access line has no trace_id field yet (logging.py, issue 5 logs part)")
    limiter = [
        json.loads(raw) for raw in stack.log("ratelimit").splitlines() if raw.startswith("{")
    ]
    assert [line for line in limiter if line.get("trace_id") == access["trace_id"]]
