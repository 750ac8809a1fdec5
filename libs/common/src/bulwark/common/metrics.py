"""Bulwark's metrics: OpenTelemetry instruments, exported for Prometheus on a port of their own.

Series as Prometheus scrapes them (docs/metrics.md says what each is for and which alert
reads it):

=============================================  =========  ==================================
name                                           type       labels
=============================================  =========  ==================================
``bulwark_http_server_requests_total``         counter    route, method, status_code
``bulwark_http_server_duration_seconds``       histogram  route, method, status_code
``bulwark_grpc_server_requests_total``         counter    grpc_method, grpc_code
``bulwark_grpc_server_duration_seconds``       histogram  grpc_method, grpc_code
``bulwark_login_failures_total``               counter    reason
``bulwark_refresh_reuse_detections_total``     counter    (none)
``bulwark_ratelimit_decisions_total``          counter    domain, rule, result
``bulwark_db_pool_connections``                gauge      pool, state
``bulwark_db_unavailable_total``               counter    pool, reason
``bulwark_db_replica_fallbacks_total``         counter    reason
=============================================  =========  ==================================

Every label value comes from a closed set or from our own configuration (route templates,
rule names), never from a user id, an address, an email or a token, so the number of series
is bounded whatever clients send.

`start_metrics` (each service's ``serve`` command calls it when ``METRICS_PORT`` is set)
builds a ``MeterProvider`` whose reader is a ``PrometheusMetricReader`` on a registry of its
own, serves that registry with prometheus_client's HTTP server on ``METRICS_HOST``:
``METRICS_PORT`` (a listener apart from the public one, which never serves ``/metrics``),
and installs the instruments. Before that, and in processes without ``METRICS_PORT``, the
``record_*`` and ``count_*`` functions do nothing.

The provider is deliberately not made OpenTelemetry's global one: instrumentation libraries
that record metrics of their own (with raw URLs or peer addresses as attributes) stay no-ops,
so the endpoint exposes only the series above and prometheus_client's ``process_*`` ones.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, get_args

import msgspec
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry, ProcessCollector, start_http_server

from bulwark.common.logging import get_logger

#: Route label of a request no route matched (404s of unknown paths, scans).
UNMATCHED_ROUTE = "<unmatched>"
#: Method label of a request whose method is not a standard one (OpenTelemetry's convention).
OTHER_METHOD = "_OTHER"
_log = get_logger(__name__)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})

#: Bucket bounds of the HTTP duration histogram, in seconds: OpenTelemetry's recommendation
#: for ``http.server.request.duration`` (5 ms to 10 s).
HTTP_DURATION_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75),
    *(1.0, 2.5, 5.0, 7.5, 10.0),
)
#: Bucket bounds of the gRPC duration histogram, in seconds: a rate-limit decision takes about
#: a millisecond and its callers give up after 100-250 ms, so the resolution is below 1 s.
GRPC_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: ``reason`` of ``bulwark_login_failures_total``: a wrong email or password (401); the
#: login limits refused the attempt (429: the attempt limit, or a failure backoff block, or
#: too many identities failed from one IP); the limiter could not answer and login failed
#: closed (503); the right password of an unverified account under ``UNVERIFIED_LOGIN=deny``
#: (403).
LoginFailureReason = Literal[
    "invalid_credentials", "rate_limited", "ratelimit_unavailable", "email_not_verified"
]
#: ``result`` of ``bulwark_ratelimit_decisions_total`` (see `count_ratelimit_decision`).
DecisionResult = Literal[
    "ok", "over_limit", "shadow_over_limit", "failure_allowed", "failure_denied"
]


class MetricsEndpoint(msgspec.Struct, frozen=True):
    """Where the Prometheus endpoint listens (``METRICS_HOST``, ``METRICS_PORT``; port 0
    picks a free one)."""

    host: str
    port: int


#: ``reason`` of ``bulwark_db_unavailable_total``: every connection stayed busy for the whole
#: wait, or the database did not answer (down, restarting, stalled).
DatabaseUnavailableReason = Literal["pool_exhausted", "unreachable"]
#: ``reason`` of ``bulwark_db_replica_fallbacks_total`` (a read sent to the primary although a
#: read replica is configured): the replica failed or was skipped after failing
#: (``replica_unavailable``), it had not replayed the caller's last write yet, lags past the
#: bound or cancelled the read in a recovery conflict (``replica_behind``), or the caller's
#: last write position could not be read from Redis (``positions_unavailable``).
ReplicaFallbackReason = Literal["replica_unavailable", "replica_behind", "positions_unavailable"]
#: Open database pools by name (``request``, ``detectors``): a function giving the number of
#: connections in use and idle, read at each scrape.
_pools: dict[str, Callable[[], tuple[int, int]]] = {}


def observe_pool(name: str, connections: Callable[[], tuple[int, int]]) -> None:
    """Report pool ``name`` in ``bulwark_db_pool_connections``: ``connections()`` gives
    ``(in use, idle)`` and is called at each scrape (whether or not metrics are on)."""
    _pools[name] = connections


def unobserve_pool(name: str) -> None:
    """Stop reporting pool ``name`` (it was closed)."""
    _pools.pop(name, None)


def _pool_observations(_options: CallbackOptions) -> Iterable[Observation]:
    for name, connections in list(_pools.items()):
        in_use, idle = connections()
        yield Observation(in_use, {"pool": name, "state": "in_use"})
        yield Observation(idle, {"pool": name, "state": "idle"})


class _Instruments:
    """The instruments of one installed ``MeterProvider``."""

    def __init__(self, meter: Meter) -> None:
        meter.create_observable_gauge(
            "bulwark.db.pool.connections",
            callbacks=[_pool_observations],
            unit="{connection}",
            description="Database connections of each pool, in use (checked out by a "
            "request) or idle.",
        )
        self.db_unavailable: Counter = meter.create_counter(
            "bulwark.db.unavailable",
            unit="{request}",
            description="Database calls answered 503, by pool and reason.",
        )
        self.replica_fallbacks: Counter = meter.create_counter(
            "bulwark.db.replica.fallbacks",
            unit="{read}",
            description="Reads sent to the primary although a read replica is configured, "
            "by reason.",
        )
        self.http_requests: Counter = meter.create_counter(
            "bulwark.http.server.requests",
            unit="{request}",
            description="HTTP requests served, by route template, method and status code.",
        )
        self.http_duration: Histogram = meter.create_histogram(
            "bulwark.http.server.duration",
            unit="s",
            description="Time from the first byte of an HTTP request to the end of its answer.",
            explicit_bucket_boundaries_advisory=HTTP_DURATION_BUCKETS,
        )
        self.grpc_requests: Counter = meter.create_counter(
            "bulwark.grpc.server.requests",
            unit="{call}",
            description="Unary gRPC calls served, by method and status code.",
        )
        self.grpc_duration: Histogram = meter.create_histogram(
            "bulwark.grpc.server.duration",
            unit="s",
            description="Time to answer a unary gRPC call.",
            explicit_bucket_boundaries_advisory=GRPC_DURATION_BUCKETS,
        )
        self.login_failures: Counter = meter.create_counter(
            "bulwark.login.failures",
            unit="{attempt}",
            description="Login attempts that did not log in, by reason.",
        )
        self.refresh_reuse: Counter = meter.create_counter(
            "bulwark.refresh.reuse_detections",
            unit="{detection}",
            description="Used refresh tokens presented again (RFC 9700 4.14.2); each ends a "
            "device session.",
        )
        self.ratelimit_decisions: Counter = meter.create_counter(
            "bulwark.ratelimit.decisions",
            unit="{decision}",
            description="Rate-limit descriptors judged, by domain, rule and result.",
        )
        self.ratelimit_calls: Counter = meter.create_counter(
            "bulwark.ratelimit.calls",
            unit="{call}",
            description="Rate-limit decisions an HTTP service asked for, answered or not.",
        )
        self.ratelimit_unanswered: Counter = meter.create_counter(
            "bulwark.ratelimit.unanswered",
            unit="{call}",
            description="Rate-limit calls of an HTTP service that got no decision (the "
            "limiter down, too slow, or its Redis failing closed), by gRPC code.",
        )
        self.app_versions_refresh_failures: Counter = meter.create_counter(
            "bulwark.app_versions.refresh_failures",
            unit="{read}",
            description="Reads of the minimum-app-version manifest that failed (the last "
            "manifest read stays in force), by source.",
        )


class _Installed:
    instruments: _Instruments | None = None


_installed = _Installed()


def install(provider: MeterProvider) -> None:
    """Record every later measurement of this process through ``provider``'s readers.

    `start_metrics` calls it; tests pass a provider with a reader of their own. The last
    provider installed wins.
    """
    _installed.instruments = _Instruments(provider.get_meter("bulwark"))


def uninstall() -> None:
    """Stop recording: the ``record_*`` and ``count_*`` functions do nothing again."""
    _installed.instruments = None


class MetricsBindError(RuntimeError):
    """The metrics endpoint's address could not be bound; the message names it."""


def start_metrics(service: str, endpoint: MetricsEndpoint) -> int:
    """Serve this process's metrics for Prometheus at ``http://host:port/metrics``.

    Args:
        service: ``auth``, ``api`` or ``ratelimit``; ``service.name`` of the ``target_info``
            series is ``bulwark-<service>`` (``OTEL_RESOURCE_ATTRIBUTES`` adds attributes).
        endpoint: the address to listen on (port 0 picks a free one).

    Returns:
        The bound port (logged as ``metrics_serving``).

    The listener is prometheus_client's threaded WSGI server in a daemon thread, for the
    life of the process: it answers every GET path with the metrics in the text format
    (OpenMetrics when asked for); ``/metrics`` is the conventional path to scrape. Counters
    are cumulative since the start.

    Raises:
        MetricsBindError: the address cannot be bound (in use, or not a local address).
    """
    registry = CollectorRegistry(auto_describe=True)
    ProcessCollector(registry=registry)
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    provider = MeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": f"bulwark-{service}"}),
    )
    try:
        server, _thread = start_http_server(endpoint.port, endpoint.host, registry=registry)
    except OSError as exc:
        raise MetricsBindError(
            f"METRICS_PORT: cannot listen on {endpoint.host}:{endpoint.port} ({exc.strerror})"
        ) from None
    install(provider)
    _start_counters_at_zero(service)
    _log.info("metrics_serving", host=endpoint.host, port=server.server_port)
    return int(server.server_port)


def _start_counters_at_zero(service: str) -> None:
    """Export the event counters the alerts read at 0 from the start: a series that first
    appears at 1 has no earlier sample, so ``increase()`` would miss that first event (the
    refresh-reuse alert fires on any increase)."""
    instruments = _installed.instruments
    assert instruments is not None  # noqa: S101 - called right after install
    if service in {"auth", "api"}:
        for reason in get_args(DatabaseUnavailableReason):
            instruments.db_unavailable.add(0, {"pool": "request", "reason": reason})
        instruments.ratelimit_calls.add(0)
    if service == "api":
        instruments.app_versions_refresh_failures.add(0, {"source": "database"})
        for fallback in get_args(ReplicaFallbackReason):
            instruments.replica_fallbacks.add(0, {"reason": fallback})
        instruments.ratelimit_unanswered.add(0, {"grpc_code": "UNAVAILABLE"})
    if service == "auth":
        instruments.app_versions_refresh_failures.add(0, {"source": "api"})
        for reason in get_args(LoginFailureReason):
            instruments.login_failures.add(0, {"reason": reason})
        instruments.refresh_reuse.add(0)


def http_labels(scope: Mapping[str, Any], status: int) -> dict[str, str]:
    """The labels of one HTTP request: ``route`` (the route template Litestar matched, e.g.
    ``/v1/notes/{note_id}``, else `UNMATCHED_ROUTE`; never the raw path), ``method`` (a
    standard method, else `OTHER_METHOD`) and ``status_code`` (``"200"``)."""
    method = str(scope.get("method", "")).upper()
    return {
        "route": str(scope.get("path_template") or UNMATCHED_ROUTE),
        "method": method if method in _METHODS else OTHER_METHOD,
        "status_code": str(status),
    }


def record_http_request(scope: Mapping[str, Any], status: int, seconds: float) -> None:
    """Count one HTTP request answered with ``status`` after ``seconds`` (see `http_labels`)."""
    instruments = _installed.instruments
    if instruments is None:
        return
    labels = http_labels(scope, status)
    instruments.http_requests.add(1, labels)
    instruments.http_duration.record(seconds, labels)


def record_grpc_call(method: str, code: str, seconds: float) -> None:
    """Count one unary gRPC call: ``method`` is the full method name of a registered handler
    (``/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``), ``code`` the status
    name (``OK``, ``INVALID_ARGUMENT``, ...), ``seconds`` its duration."""
    instruments = _installed.instruments
    if instruments is None:
        return
    labels = {"grpc_method": method, "grpc_code": code}
    instruments.grpc_requests.add(1, labels)
    instruments.grpc_duration.record(seconds, labels)


def count_login_failure(reason: LoginFailureReason) -> None:
    """Count one login attempt that did not log in (see `LoginFailureReason`)."""
    if (instruments := _installed.instruments) is not None:
        instruments.login_failures.add(1, {"reason": reason})


def count_refresh_reuse() -> None:
    """Count one refresh-token reuse detection (a used token presented again, outside the
    grace window for retries): the device session it belonged to was ended."""
    if (instruments := _installed.instruments) is not None:
        instruments.refresh_reuse.add(1)


def count_ratelimit_decision(domain: str, rule: str, result: DecisionResult) -> None:
    """Count one judged descriptor of a ``ShouldRateLimit`` call.

    Args:
        domain: the request's domain; only configured domains reach here (a descriptor of
            an unknown domain matches no rule and is not counted).
        rule: the matched rule's name in the rules file (``endpoint=login/email``), never a
            descriptor value.
        result: ``ok`` (within the limit, counted), ``over_limit`` (refused),
            ``shadow_over_limit`` (over the limit of a shadow-mode rule: allowed and
            logged), ``failure_allowed`` / ``failure_denied`` (Redis failed or timed out,
            and the rule's ``failure_mode`` answered allow or deny).
    """
    if (instruments := _installed.instruments) is not None:
        instruments.ratelimit_decisions.add(1, {"domain": domain, "rule": rule, "result": result})


def count_ratelimit_call() -> None:
    """Count one rate-limit decision an HTTP service asks for (the denominator of the
    ``BulwarkRateLimiterUnanswered`` alert)."""
    if (instruments := _installed.instruments) is not None:
        instruments.ratelimit_calls.add(1)


def count_ratelimit_unanswered(code: str) -> None:
    """Count one rate-limit call of an HTTP service that got no decision: ``code`` is the
    gRPC status name (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``, ...), or ``FAILURE_MODE`` when
    the limiter answered by a rule's ``failure_mode: deny`` because its Redis failed. The
    endpoint's failure mode then decided; the ``BulwarkRateLimiterUnanswered`` alert watches
    this counter (the limiter's own metrics cannot show that it is unreachable)."""
    if (instruments := _installed.instruments) is not None:
        instruments.ratelimit_unanswered.add(1, {"grpc_code": code})


def count_database_unavailable(pool: str, reason: DatabaseUnavailableReason) -> None:
    """Count one database call of pool ``pool`` answered 503 (see `DatabaseUnavailableReason`)."""
    if (instruments := _installed.instruments) is not None:
        instruments.db_unavailable.add(1, {"pool": pool, "reason": reason})


def count_replica_fallback(reason: ReplicaFallbackReason) -> None:
    """Count one read sent to the primary instead of the read replica (see
    `ReplicaFallbackReason`)."""
    if (instruments := _installed.instruments) is not None:
        instruments.replica_fallbacks.add(1, {"reason": reason})


def count_app_versions_refresh_failure(source: str) -> None:
    """Count one failed read of the minimum-app-version manifest from ``source``
    (``database`` at the API, ``api`` at the auth service); the last one read stays in force."""
    if (instruments := _installed.instruments) is not None:
        instruments.app_versions_refresh_failures.add(1, {"source": source})
