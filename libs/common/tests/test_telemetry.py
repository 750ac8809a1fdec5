"""Tracing switches, the HTTP server span and its trust policy (no I/O: spans kept in memory)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio  # type: ignore[attr-defined]  # not in stubs
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision
from opentelemetry.trace import SpanKind, StatusCode

from bulwark.common.http import Message, Receive, Scope, Send, parse_trusted_proxies
from bulwark.common.settings import SettingsError
from bulwark.common.telemetry import (
    GrpcClientTracing,
    GrpcServerTracing,
    TracingMiddleware,
    TracingSettings,
    _NoOrphanClientSpans,
    record_grpc_code,
    tracing_settings,
)

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"


def test_nothing_is_exported_unless_an_endpoint_or_the_exporter_is_named() -> None:
    assert tracing_settings({}) == TracingSettings(enabled=True, exporting=False)
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert tracing_settings(endpoint).exporting
    assert tracing_settings({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c/v1/traces"}).exporting
    assert tracing_settings({"OTEL_TRACES_EXPORTER": "otlp"}).exporting
    assert not tracing_settings({**endpoint, "OTEL_TRACES_EXPORTER": "none"}).exporting
    assert tracing_settings({**endpoint, "OTEL_SDK_DISABLED": "TRUE"}) == TracingSettings(
        enabled=False
    )
    assert tracing_settings({"OTEL_SDK_DISABLED": "false"}).enabled


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, "OTEL_TRACES_EXPORTER"),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
        ({"OTEL_TRACES_SAMPLER": "sometimes"}, "OTEL_TRACES_SAMPLER"),
        (
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "2"},
            "OTEL_TRACES_SAMPLER_ARG",
        ),
        ({"TRUSTED_TRACE_PEERS": "10.0.0.0/8, ingress"}, "TRUSTED_TRACE_PEERS"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"),
        ({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096"}, "OTEL_BSP_MAX_QUEUE_SIZE"),
    ],
)
def test_malformed_tracing_settings_are_refused(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        tracing_settings(environ)


def test_the_signal_specific_protocol_wins() -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",  # for the other signals
    }
    assert tracing_settings(environ).enabled


def test_exports_go_in_small_batches_unless_told_otherwise() -> None:
    assert tracing_settings({}).export_batch_size == 64
    assert tracing_settings({"OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512"}).export_batch_size == 512


def test_trusted_trace_peers_are_addresses_or_networks() -> None:
    peers = tracing_settings({"TRUSTED_TRACE_PEERS": "10.0.0.0/8 127.0.0.1"}).trusted_peers
    assert peers == parse_trusted_proxies("10.0.0.0/8,127.0.0.1")


def test_a_client_span_without_a_parent_is_dropped() -> None:
    sampler = _NoOrphanClientSpans(ALWAYS_ON)
    assert sampler.should_sample(None, 1, "SELECT", SpanKind.CLIENT).decision is Decision.DROP
    assert sampler.should_sample(None, 1, "GET", SpanKind.SERVER).decision.is_sampled()
    provider = TracerProvider(sampler=sampler)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("GET /v1/notes", kind=SpanKind.SERVER):
        child = tracer.start_span("SELECT", kind=SpanKind.CLIENT)
        assert child.is_recording()
        child.end()


def _scope(
    headers: dict[str, str] | None = None, peer: str = "203.0.113.9", method: str = "GET"
) -> Scope:
    return {
        "type": "http",
        "method": method,
        "scheme": "https",
        "path": "/v1/notes/0b6f1c5e-secret-looking-path",
        "query_string": b"access_token=eyJhbGciOi",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (peer, 50000),
        "state": {},
    }


class Recorder:
    """A tracer provider that keeps every ended span."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def spans(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


async def _call(app: Any, scope: Scope) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent


def _routed(status: int, template: str | None = "/v1/notes/{note_id}") -> Any:
    """An app that routes like Litestar (``path_template``, state) and answers ``status``."""
    seen: dict[str, Any] = {}

    async def app(scope: Scope, _receive: Receive, send: Send) -> None:
        seen["span"] = trace.get_current_span()
        if template:
            scope["path_template"] = template
        scope["state"].update(request_id="req-1", client_ip="203.0.113.9", user_id="u-1")
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app.seen = seen  # type: ignore[attr-defined]
    return app


@pytest.mark.security(stride="I", asvs=("V14.2",))
async def test_the_server_span_is_named_by_route_and_records_no_request_data() -> None:
    recorder = Recorder()
    inner = _routed(200)
    await _call(TracingMiddleware(inner, (), recorder.provider), _scope())
    (span,) = recorder.spans()
    assert span.name == "GET /v1/notes/{note_id}"
    assert span.kind is SpanKind.SERVER
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.scheme": "https",
        "http.route": "/v1/notes/{note_id}",
        "http.response.status_code": 200,
        "client.address": "203.0.113.9",
        "user.id": "u-1",
        "bulwark.request_id": "req-1",
    }
    # The whole request (and so its access-log line) runs with this span current.
    assert inner.seen["span"].get_span_context().span_id == span.context.span_id


async def test_unmatched_routes_and_unknown_methods_keep_a_low_cardinality_name() -> None:
    recorder = Recorder()
    await _call(TracingMiddleware(_routed(404, None), (), recorder.provider), _scope())
    odd = _scope(method="PROPFIND")
    await _call(TracingMiddleware(_routed(405, None), (), recorder.provider), odd)
    assert [s.name for s in recorder.spans()] == ["GET", "HTTP"]
    assert recorder.spans()[1].attributes["http.request.method"] == "_OTHER"  # type: ignore[index]


@pytest.mark.security(stride="T", asvs=("V4.1",))
async def test_an_untrusted_traceparent_starts_a_new_trace_with_a_link() -> None:
    recorder = Recorder()
    middleware = TracingMiddleware(
        _routed(200), parse_trusted_proxies("10.0.0.0/8"), recorder.provider
    )
    headers = {"traceparent": TRACEPARENT, "tracestate": "evil=1", "baggage": "user=admin"}
    await _call(middleware, _scope(headers, peer="203.0.113.9"))
    (span,) = recorder.spans()
    assert span.parent is None
    assert f"{span.context.trace_id:032x}" != CLIENT_TRACE
    (link,) = span.links
    assert f"{link.context.trace_id:032x}" == CLIENT_TRACE
    assert f"{link.context.span_id:016x}" == CLIENT_SPAN
    assert not link.context.trace_state
    assert dict(link.attributes or {}) == {"bulwark.untrusted_parent": True}


@pytest.mark.security(stride="T", asvs=("V4.1",))
async def test_a_malformed_traceparent_is_ignored() -> None:
    recorder = Recorder()
    middleware = TracingMiddleware(_routed(200), (), recorder.provider)
    await _call(middleware, _scope({"traceparent": f"00-{'0' * 32}-{CLIENT_SPAN}-01"}))
    (span,) = recorder.spans()
    assert span.parent is None
    assert not span.links


@pytest.mark.security(stride="T", asvs=("V4.1",))
async def test_a_trusted_peer_continues_its_trace() -> None:
    recorder = Recorder()
    middleware = TracingMiddleware(
        _routed(200), parse_trusted_proxies("10.0.0.0/8"), recorder.provider
    )
    await _call(middleware, _scope({"traceparent": TRACEPARENT}, peer="10.1.2.3"))
    (span,) = recorder.spans()
    assert f"{span.context.trace_id:032x}" == CLIENT_TRACE
    assert span.parent is not None
    assert f"{span.parent.span_id:016x}" == CLIENT_SPAN
    assert not span.links


@pytest.mark.security(stride="I", asvs=("V14.2",))
async def test_server_errors_and_exceptions_mark_the_span_without_their_message() -> None:
    recorder = Recorder()
    await _call(TracingMiddleware(_routed(503), (), recorder.provider), _scope())

    async def failing(_scope: Scope, _receive: Receive, _send: Send) -> None:
        raise RuntimeError("password=hunter2")

    with pytest.raises(RuntimeError):
        await _call(TracingMiddleware(failing, (), recorder.provider), _scope())
    answered, raised = recorder.spans()
    assert answered.status.status_code is StatusCode.ERROR
    assert raised.status.status_code is StatusCode.ERROR
    assert raised.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
    assert not raised.events  # no exception event: its message may quote request data
    assert raised.status.description is None


async def test_the_lifespan_shutdown_flushes_before_the_server_is_told() -> None:
    order: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def receive() -> Message:
        return {"type": "lifespan.shutdown"}

    async def send(message: Message) -> None:
        order.append(message["type"])

    middleware = TracingMiddleware(
        app, (), Recorder().provider, on_shutdown=lambda: order.append("flush")
    )
    await middleware({"type": "lifespan"}, receive, send)
    assert order == ["flush", "lifespan.shutdown.complete"]


async def _ok(request: bytes, _context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    return request


async def _fail(_request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
    await context.abort(grpc.StatusCode.UNAVAILABLE, "store down")
    raise AssertionError  # abort raises


@contextlib.asynccontextmanager
async def _traced_server(recorder: Recorder) -> AsyncIterator[str]:
    """A real grpc.aio server on a free port with ``t.Limits/Ok``, ``/Fail`` and health."""

    def unary(behavior: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            behavior, request_deserializer=bytes, response_serializer=bytes
        )

    server = grpc.aio.server(interceptors=[GrpcServerTracing(recorder.provider)])
    handlers = {"Ok": unary(_ok), "Fail": unary(_fail)}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Limits", handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def test_grpc_server_spans_continue_the_callers_context_and_carry_the_code() -> None:
    recorder = Recorder()
    async with _traced_server(recorder) as target, grpc.aio.insecure_channel(target) as channel:
        metadata = (("traceparent", TRACEPARENT),)
        assert await channel.unary_unary("/t.Limits/Ok")(b"x", metadata=metadata) == b"x"
        with pytest.raises(grpc.aio.AioRpcError):
            await channel.unary_unary("/t.Limits/Fail")(b"x")
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    continued, failed = recorder.spans()  # the health check is not traced
    assert continued.name == "t.Limits/Ok"
    assert continued.kind is SpanKind.SERVER
    assert f"{continued.context.trace_id:032x}" == CLIENT_TRACE
    assert continued.parent is not None
    assert f"{continued.parent.span_id:016x}" == CLIENT_SPAN
    assert dict(continued.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "t.Limits",
        "rpc.method": "Ok",
        "rpc.grpc.status_code": 0,
    }
    assert failed.parent is None
    assert failed.attributes == {
        **continued.attributes,
        "rpc.method": "Fail",
        "rpc.grpc.status_code": 14,
    }  # type: ignore[dict-item]
    assert failed.status.status_code is StatusCode.ERROR


async def test_grpc_client_spans_send_their_context_to_the_server() -> None:
    recorder = Recorder()
    tracer = recorder.provider.get_tracer("test")
    tracing = GrpcClientTracing(recorder.provider)
    async with (
        _traced_server(recorder) as target,
        grpc.aio.insecure_channel(target) as channel,
    ):
        with tracer.start_as_current_span("GET /v1/notes", kind=SpanKind.SERVER):
            metadata: list[tuple[str, str]] = []
            with tracing.call("/t.Limits/Ok", metadata) as span:
                assert await channel.unary_unary("/t.Limits/Ok")(b"x", metadata=metadata) == b"x"
                record_grpc_code(span, grpc.StatusCode.OK)
            assert [name for name, _ in metadata] == ["traceparent"]
            metadata = []
            with tracing.call("/t.Limits/Fail", metadata) as span:
                with pytest.raises(grpc.aio.AioRpcError) as failed:
                    await channel.unary_unary("/t.Limits/Fail")(b"x", metadata=metadata)
                record_grpc_code(span, failed.value.code())
    by_kind: dict[SpanKind, list[ReadableSpan]] = {}
    for span in recorder.spans():
        by_kind.setdefault(span.kind, []).append(span)
    (request,) = [s for s in by_kind[SpanKind.SERVER] if s.name == "GET /v1/notes"]
    served = [s for s in by_kind[SpanKind.SERVER] if s.name.startswith("t.Limits/")]
    client_ok, client_fail = by_kind[SpanKind.CLIENT]
    assert [s.name for s in (client_ok, client_fail)] == ["t.Limits/Ok", "t.Limits/Fail"]
    for client, server in zip((client_ok, client_fail), served, strict=True):
        assert client.parent is not None
        assert client.parent.span_id == request.context.span_id
        assert server.parent is not None
        assert server.parent.span_id == client.context.span_id
    assert client_ok.attributes["rpc.grpc.status_code"] == 0  # type: ignore[index]
    assert client_fail.attributes["rpc.grpc.status_code"] == 14  # type: ignore[index]
    assert client_fail.status.status_code is StatusCode.ERROR
