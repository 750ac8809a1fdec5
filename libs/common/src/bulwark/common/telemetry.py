"""OpenTelemetry tracing for every service: set-up, the HTTP server span, gRPC interceptors.

One request is one trace across the processes: the HTTP service's server span (named by the
route template), its Postgres queries (asyncpg), its ``ShouldRateLimit`` call (a gRPC client
span whose context travels in the ``traceparent`` metadata) and the rate limiter's server span.
docs/tracing.md has the variables, the span names and the reasons.

- `tracing_settings` reads the switches (standard ``OTEL_*`` variables, ``TRUSTED_TRACE_PEERS``);
  `start_tracing` installs the process's tracer provider, exporting over OTLP/HTTP only when
  an endpoint or ``OTEL_TRACES_EXPORTER=otlp`` is set. Otherwise spans are still made, not
  recorded, so log lines carry a trace id; ``OTEL_SDK_DISABLED=true`` turns it all off.
- `TracingMiddleware` is the outermost ASGI layer: it ignores a ``traceparent`` from untrusted
  peers (a mobile client must not pick our trace ids or sampling), links it instead.
- `grpc_client_tracing` / `grpc_server_interceptors` propagate inside our own network.

Nothing secret is recorded: no bodies, headers, query strings or SQL parameters (asyncpg's
instrumentation records the statement text only), and exception messages are left out.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import grpc
import msgspec
from opentelemetry import context, propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,
)
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from bulwark.common.http import (
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    TrustedProxies,
    parse_trusted_proxies,
)
from bulwark.common.settings import SettingsError, env_int

#: Values of ``OTEL_TRACES_SAMPLER`` the SDK knows (others would silently become the default).
SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
_HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# gRPC services probed every few seconds or used by tools: not worth a trace each.
_UNTRACED_GRPC = ("/grpc.health.", "/grpc.reflection.")
_TRACER_NAME = "bulwark.common.telemetry"
#: Spans per OTLP export unless ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE`` says otherwise.
DEFAULT_EXPORT_BATCH_SIZE = 64

# grpc-stubs generics are not subscriptable at run time.
if TYPE_CHECKING:
    _ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
    _Handler = grpc.RpcMethodHandler[Any, Any]
else:
    _ServerInterceptor = grpc.aio.ServerInterceptor
    _Handler = grpc.RpcMethodHandler


class TracingSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What `tracing_settings` read from the environment.

    Attributes:
        enabled: False when ``OTEL_SDK_DISABLED`` is ``true``: no spans, no trace ids.
        exporting: spans are sent over OTLP/HTTP (protobuf) to the collector.
        trusted_peers: TCP peers (``TRUSTED_TRACE_PEERS``) whose ``traceparent`` and
            ``tracestate`` the HTTP services continue; from anyone else they are not believed.
        export_batch_size: spans per export (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``), 64 unless
            set: encoding the SDK's default of 512 holds the GIL for milliseconds, which
            showed in the rate limiter's p99 (docs/tracing.md, "Overhead").
    """

    enabled: bool = True
    exporting: bool = False
    trusted_peers: TrustedProxies = ()
    export_batch_size: int = DEFAULT_EXPORT_BATCH_SIZE


def tracing_settings(environ: Mapping[str, str]) -> TracingSettings:
    """Read the tracing switches from ``environ`` (the process environment).

    Export is on when ``OTEL_TRACES_EXPORTER`` is ``otlp``, or when it is unset and
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set; so a fresh
    ``make run`` does not try ``localhost:4318``. The remaining ``OTEL_*`` variables (endpoint,
    headers, timeout, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES`` ...) are read by the SDK itself.

    Raises:
        SettingsError: ``OTEL_TRACES_EXPORTER`` is not ``otlp``/``none`` (``console`` would mix
            spans into the JSON log stream), the OTLP protocol is not ``http/protobuf`` (the only
            exporter installed), ``OTEL_TRACES_SAMPLER`` is unknown or its ratio is not in
            [0, 1], the export batch is not a positive integer within the queue size, or
            ``TRUSTED_TRACE_PEERS`` holds something that is not an address or network.
    """
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingSettings(enabled=False)
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter not in {"", "otlp", "none"}:
        raise SettingsError("OTEL_TRACES_EXPORTER must be otlp or none")
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = environ.get(name, "").strip()
        if protocol:
            if protocol != "http/protobuf":
                raise SettingsError(f"{name} must be http/protobuf (the exporter installed)")
            break
    sampler = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if sampler not in SAMPLERS:
        raise SettingsError(f"OTEL_TRACES_SAMPLER must be one of {', '.join(sorted(SAMPLERS))}")
    if sampler.endswith("traceidratio"):
        raw = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0").strip()
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise SettingsError(f"OTEL_TRACES_SAMPLER_ARG must be between 0 and 1, got {raw!r}")
    endpoint = any(
        environ.get(name, "").strip()
        for name in ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    try:
        trusted = parse_trusted_proxies(environ.get("TRUSTED_TRACE_PEERS", ""))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_TRACE_PEERS: {exc}") from None
    batch = env_int(environ, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_EXPORT_BATCH_SIZE, minimum=1)
    if batch > env_int(environ, "OTEL_BSP_MAX_QUEUE_SIZE", 2048, minimum=1):
        raise SettingsError(
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must not exceed OTEL_BSP_MAX_QUEUE_SIZE"
        )
    return TracingSettings(
        exporting=exporter == "otlp" or (exporter == "" and endpoint),
        trusted_peers=trusted,
        export_batch_size=batch,
    )


class _NoOrphanClientSpans(Sampler):
    """The configured sampler, except that a client span without a parent is dropped.

    Postgres queries and gRPC calls made outside any request (migrations at start-up, the
    auth service's revocation resync every few seconds) would otherwise each be a trace of
    one span, forever. They still get a (not sampled) trace id for their log lines.
    """

    def __init__(self, delegate: Sampler) -> None:
        self._delegate = delegate

    def should_sample(  # noqa: PLR0917  # the SDK's Sampler signature
        self,
        parent_context: context.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        """Drop a parentless CLIENT span; otherwise ask the configured sampler."""
        parent = trace.get_current_span(parent_context).get_span_context()
        if kind is SpanKind.CLIENT and not parent.is_valid:
            return SamplingResult(Decision.DROP)
        return self._delegate.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        """Name shown by the SDK, e.g. ``NoOrphanClientSpans{ParentBased{...}}``."""
        return f"NoOrphanClientSpans{{{self._delegate.get_description()}}}"


class Tracing:
    """This process's tracing, as `start_tracing` set it up."""

    def __init__(self, settings: TracingSettings, provider: TracerProvider | None) -> None:
        """Keep ``settings`` and the installed ``provider`` (None when disabled)."""
        self.settings = settings
        self.provider = provider

    def asgi(self, app: ASGIApp) -> ASGIApp:
        """``app`` wrapped in `TracingMiddleware` (unchanged when tracing is disabled)."""
        if self.provider is None:
            return app
        return TracingMiddleware(
            app, self.settings.trusted_peers, self.provider, on_shutdown=self.shutdown
        )

    def shutdown(self) -> None:
        """Export the spans still queued and stop. A collector that does not answer holds
        this up for at most ``OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`` (10 s by default)."""
        if self.provider is not None:
            self.provider.shutdown()


def start_tracing(
    settings: TracingSettings, service_name: str, environment: str, *, postgres: bool = False
) -> Tracing:
    """Install the global tracer provider for this process; call once, after logging is set up.

    Args:
        settings: from `tracing_settings`.
        service_name: the default ``service.name`` (``bulwark-api``); ``OTEL_SERVICE_NAME`` or
            ``service.name`` in ``OTEL_RESOURCE_ATTRIBUTES`` override it.
        environment: ``BULWARK_ENV``, recorded as ``deployment.environment.name`` unless
            ``OTEL_RESOURCE_ATTRIBUTES`` names one.
        postgres: trace asyncpg queries (statement text only, never parameters).

    Returns:
        The handle whose `Tracing.asgi` wraps an HTTP app and `Tracing.shutdown` flushes.
    """
    if not settings.enabled:
        return Tracing(settings, None)
    defaults = {"service.name": service_name, "deployment.environment.name": environment}
    given = OTELResourceDetector().detect().attributes  # OTEL_RESOURCE_ATTRIBUTES, ..._NAME
    resource = Resource.create({k: v for k, v in defaults.items() if k not in given})
    # Not exporting: every span is dropped at birth (a non-recording span costs about half),
    # yet has its ids, so log lines and the rate limiter's still carry the trace id.
    sampler = _NoOrphanClientSpans(_get_from_env_or_default()) if settings.exporting else ALWAYS_OFF
    provider = TracerProvider(sampler=sampler, resource=resource)
    if settings.exporting:
        # Imported here: a process that does not export never loads requests and protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
            OTLPSpanExporter,
        )

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(), max_export_batch_size=settings.export_batch_size)
        )
    trace.set_tracer_provider(provider)
    if postgres:
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor  # noqa: PLC0415

        # capture_parameters stays False: $1... values (emails, hashes) are never recorded.
        AsyncPGInstrumentor(capture_parameters=False).instrument(  # type: ignore[no-untyped-call]
            tracer_provider=provider
        )
    return Tracing(settings, provider)


def _sdk_provider() -> TracerProvider | None:
    provider = trace.get_tracer_provider()
    return provider if isinstance(provider, TracerProvider) else None


def grpc_client_tracing() -> GrpcClientTracing | None:
    """The tracing of calls to our own gRPC services (see `GrpcClientTracing`), or None when
    tracing is not started, so an untraced process pays nothing."""
    return None if _sdk_provider() is None else GrpcClientTracing()


class _ListSetter(Setter[list[tuple[str, str]]]):
    def set(self, carrier: list[tuple[str, str]], key: str, value: str) -> None:
        carrier.append((key.lower(), value))  # gRPC metadata keys are lower-case


_list_setter = _ListSetter()


class GrpcClientTracing:
    """A CLIENT span around a unary call, its context sent as ``traceparent`` metadata.

    Same name and attributes as `GrpcServerTracing`'s spans, so both ends of a call read
    alike; never the request, the response or the metadata. The caller wraps its call (a
    ``grpc.aio`` client interceptor did this before; its extra layer cost more CPU per call
    than the span, issue 11 and docs/benchmarks.md).
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Spans come from ``tracer_provider`` (default: the global one)."""
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)

    @contextmanager
    def call(self, method: str, metadata: list[tuple[str, str]]) -> Iterator[trace.Span]:
        """The span of one call of ``method`` (``/package.Service/Method``), current in the
        block; the propagation headers are appended to ``metadata``, which the call must
        send. Report the call's outcome with `record_grpc_code`."""
        name = method.removeprefix("/")
        service, _, rpc = name.partition("/")
        with self._tracer.start_as_current_span(
            name,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            propagate.inject(metadata, setter=_list_setter)
            yield span


def grpc_server_interceptors() -> list[_ServerInterceptor]:
    """Interceptors for our ``grpc.aio`` server, to be placed before the access-log one so its
    lines carry the trace id (see `GrpcServerTracing`). Empty when tracing is not started."""
    return [] if _sdk_provider() is None else [GrpcServerTracing()]


class GrpcServerTracing(_ServerInterceptor):
    """A SERVER span around each unary call, continuing the caller's ``traceparent`` metadata.

    The rate limiter is reached only by our own services and the ingress, so their context is
    believed. Span name ``{service}/{method}``
    (``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``); attributes
    ``rpc.system``, ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code``; any code but OK
    sets ERROR status. Never the request, the response or the metadata. Health checks,
    reflection and streaming calls are not traced.

    Written here rather than taken from opentelemetry-instrumentation-grpc: on this hot path
    that interceptor cost 45 to 60 us more CPU per decision (docs/tracing.md, "Overhead").
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        """Spans come from ``tracer_provider`` (default: the global one)."""
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        """Wrap the unary-unary handler of the called method."""
        handler = await continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or handler.unary_unary is None or method.startswith(_UNTRACED_GRPC):
            return handler
        # grpc-stubs types behaviours as synchronous; a grpc.aio server's are coroutines.
        behavior = cast("Callable[..., Awaitable[Any]]", handler.unary_unary)
        name = method.removeprefix("/")
        service, _, rpc = name.partition("/")
        attributes = {"rpc.system": "grpc", "rpc.service": service, "rpc.method": rpc}
        tracer = self._tracer

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            parent = propagate.extract(dict(context.invocation_metadata() or ()))
            with tracer.start_as_current_span(
                name,
                parent,
                SpanKind.SERVER,
                attributes,
                record_exception=False,
                set_status_on_exception=False,
            ) as span:
                cancelled = False
                try:
                    return await behavior(request, context)
                except asyncio.CancelledError:
                    cancelled = True  # the caller's deadline passed, or it went away
                    raise
                finally:
                    code = context.code() or grpc.StatusCode.OK
                    record_grpc_code(span, grpc.StatusCode.CANCELLED if cancelled else code)

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def record_grpc_code(span: trace.Span, code: object) -> None:
    """``rpc.grpc.status_code``; any code but OK is an error (client and server alike)."""
    if isinstance(code, grpc.StatusCode) and span.is_recording():
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR))


class _ScopeHeaders(Getter[Scope]):
    """Reads propagation headers from an ASGI scope (names are lower-case bytes there)."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.lower().encode("latin-1")
        values = [v.decode("latin-1") for k, v in carrier.get("headers", []) if k == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [k.decode("latin-1") for k, _ in carrier.get("headers", [])]


_scope_headers = _ScopeHeaders()


def _peer_trusted(scope: Scope, trusted: TrustedProxies) -> bool:
    client = scope.get("client")
    if not trusted or not client:
        return False
    try:
        address = ipaddress.ip_address(str(client[0]))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


class TracingMiddleware:
    """Outermost ASGI layer: one SERVER span per HTTP request, current while the whole request
    runs (the access-log line included, so it carries the trace id).

    Span name ``{method} {route template}`` (``GET /v1/notes/{note_id}``), or the method
    alone when no route matched. Attributes: ``http.request.method``, ``url.scheme``,
    ``http.route``, ``http.response.status_code``, ``client.address`` (as resolved through
    trusted proxies), ``user.id`` (when authenticated), ``bulwark.request_id``. Never the raw
    path or query string, headers or bodies. 5xx and escaping exceptions set ERROR status
    with ``error.type`` (the exception's class, never its message).

    Incoming ``traceparent``/``tracestate``/``baggage`` are continued only when the TCP peer is
    in ``trusted_peers``. From anyone else the request starts a new trace; a well-formed client
    ``traceparent`` is kept only as a link (trace and span id, no flags or state) so the app's
    own trace can be found, while its sampling flag and trace id change nothing of ours.
    """

    def __init__(
        self,
        app: ASGIApp,
        trusted_peers: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        tracer_provider: trace.TracerProvider | None = None,
        *,
        on_shutdown: Callable[[], object] | None = None,
    ) -> None:
        """Wrap ``app``; spans come from ``tracer_provider`` (default: the global one).

        ``on_shutdown`` (blocking; run in a thread) is called when the app's lifespan has shut
        down, before the server is told so: uvicorn re-raises the SIGTERM it caught once it
        has stopped, which ends the process before any code after ``uvicorn.run`` could flush.
        """
        self.app = app
        self.trusted_peers: TrustedProxies = tuple(trusted_peers)
        self._tracer = trace.get_tracer(_TRACER_NAME, tracer_provider=tracer_provider)
        self._on_shutdown = on_shutdown

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point; the lifespan scope passes through (see ``on_shutdown``)."""
        if scope["type"] == "lifespan" and self._on_shutdown is not None:
            await self.app(scope, receive, self._flushing(send, self._on_shutdown))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _HTTP_METHODS else "_OTHER"
        name = method if method != "_OTHER" else "HTTP"
        with (
            self._incoming_context(scope) as links,
            self._tracer.start_as_current_span(
                name,
                kind=SpanKind.SERVER,
                links=links,
                attributes={
                    "http.request.method": method,
                    "url.scheme": scope.get("scheme", "http"),
                },
                record_exception=False,  # an exception's message may quote request data
                set_status_on_exception=False,
            ) as span,
        ):

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start" and span.is_recording():
                    _describe_response(span, scope, name, int(message["status"]))
                await send(message)

            try:
                await self.app(scope, receive, traced_send)
            except BaseException as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                span.set_status(Status(StatusCode.ERROR))
                raise

    @staticmethod
    def _flushing(send: Send, on_shutdown: Callable[[], object]) -> Send:
        async def flushing_send(message: Message) -> None:
            if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                await asyncio.to_thread(on_shutdown)
            await send(message)

        return flushing_send

    @contextmanager
    def _incoming_context(self, scope: Scope) -> Iterator[list[Link]]:
        """Make the propagated context current if the peer is trusted, an empty one otherwise;
        yield the links for the new span."""
        extracted = propagate.extract(scope, context.Context(), getter=_scope_headers)
        links: list[Link] = []
        if _peer_trusted(scope, self.trusted_peers):
            parent = extracted
        else:
            parent = context.Context()
            claimed = trace.get_current_span(extracted).get_span_context()
            if claimed.is_valid:
                links.append(
                    Link(
                        SpanContext(claimed.trace_id, claimed.span_id, is_remote=True),
                        {"bulwark.untrusted_parent": True},
                    )
                )
        token = context.attach(parent)
        try:
            yield links
        finally:
            context.detach(token)


def _describe_response(span: trace.Span, scope: Scope, name: str, status: int) -> None:
    """Name the span by its route and record the outcome, once the response starts."""
    template = scope.get("path_template")
    if template:
        span.update_name(f"{name} {template}")
        span.set_attribute("http.route", str(template))
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    state = scope.get("state") or {}
    for key, attribute in (
        ("client_ip", "client.address"),
        ("user_id", "user.id"),
        ("request_id", "bulwark.request_id"),
    ):
        if state.get(key):
            span.set_attribute(attribute, str(state[key]))
