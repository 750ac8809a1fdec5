"""Metric names, labels and bounds as Prometheus sees them (bulwark.common.metrics), and the
``METRICS_*`` settings. The exporter runs on a private registry: no port is opened."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from bulwark.common import metrics
from bulwark.common.settings import SettingsError, env_metrics_endpoint


@pytest.fixture
def exposition() -> Iterator[CollectorRegistry]:
    """Install a provider whose reader feeds a private registry; uninstall afterwards."""
    registry = CollectorRegistry()
    reader = PrometheusMetricReader(scope_info_enabled=False, registry=registry)
    provider = MeterProvider(metric_readers=[reader])
    metrics.install(provider)
    yield registry
    metrics.uninstall()
    provider.shutdown()


def _text(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


@pytest.mark.security(stride="I", asvs=("V16.2",))
def test_http_requests_are_labelled_by_route_template_not_by_path(
    exposition: CollectorRegistry,
) -> None:
    matched = {"method": "GET", "path": "/v1/notes/5d1c", "path_template": "/v1/notes/{note_id}"}
    metrics.record_http_request(matched, 200, 0.02)
    metrics.record_http_request({"method": "BREW", "path": "/ann@example.com"}, 404, 0.001)
    text = _text(exposition)
    assert (
        'bulwark_http_server_requests_total{method="GET",route="/v1/notes/{note_id}",'
        'status_code="200"} 1.0' in text
    )
    assert (
        'bulwark_http_server_requests_total{method="_OTHER",route="<unmatched>",'
        'status_code="404"} 1.0' in text
    )
    assert "5d1c" not in text
    assert "ann@example.com" not in text


def test_http_durations_are_seconds_in_buckets_from_5_ms_to_10_s(
    exposition: CollectorRegistry,
) -> None:
    scope = {"method": "GET", "path_template": "/v1/me"}
    metrics.record_http_request(scope, 200, 0.03)
    text = _text(exposition)
    assert "# TYPE bulwark_http_server_duration_seconds histogram" in text
    labels = 'method="GET",route="/v1/me",status_code="200"'
    for le, count in (("0.025", 0), ("0.05", 1), ("10.0", 1), ("+Inf", 1)):
        assert f'bulwark_http_server_duration_seconds_bucket{{le="{le}",{labels}}} {count}.0' in (
            text
        )
    assert f"bulwark_http_server_duration_seconds_count{{{labels}}} 1.0" in text
    assert f"bulwark_http_server_duration_seconds_sum{{{labels}}} 0.03" in text


def test_every_series_has_its_documented_name(exposition: CollectorRegistry) -> None:
    metrics.record_grpc_call(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", "OK", 0.001
    )
    metrics.count_login_failure("invalid_credentials")
    metrics.count_refresh_reuse()
    metrics.count_ratelimit_decision("bulwark-auth", "endpoint=login/email", "over_limit")
    text = _text(exposition)
    assert (
        'bulwark_grpc_server_requests_total{grpc_code="OK",'
        'grpc_method="/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"} 1.0' in text
    )
    assert "# TYPE bulwark_grpc_server_duration_seconds histogram" in text
    assert 'bulwark_grpc_server_duration_seconds_bucket{grpc_code="OK",' in text
    assert 'bulwark_login_failures_total{reason="invalid_credentials"} 1.0' in text
    assert "bulwark_refresh_reuse_detections_total 1.0" in text
    assert (
        'bulwark_ratelimit_decisions_total{domain="bulwark-auth",result="over_limit",'
        'rule="endpoint=login/email"} 1.0' in text
    )
    assert "otel_scope" not in text


def test_nothing_is_recorded_before_install() -> None:
    metrics.uninstall()
    metrics.record_http_request({"method": "GET"}, 200, 0.01)  # no error, no effect
    metrics.count_refresh_reuse()


@pytest.mark.security(stride="I", asvs=("V13",))
def test_metrics_endpoint_is_off_unless_metrics_port_is_set() -> None:
    assert env_metrics_endpoint({}, host="10.0.0.5", port=8000) is None
    on = env_metrics_endpoint({"METRICS_PORT": "9464"}, host="10.0.0.5", port=8000)
    assert on == metrics.MetricsEndpoint(host="10.0.0.5", port=9464)
    local = env_metrics_endpoint(
        {"METRICS_PORT": "0", "METRICS_HOST": "127.0.0.1"},
        host="10.0.0.5",
        port=8000,
    )
    assert local == metrics.MetricsEndpoint(host="127.0.0.1", port=0)


@pytest.mark.parametrize(
    ("value", "message"),
    [("8000", "differ from PORT"), ("70000", "at most 65535"), ("nine", "integer"), ("-1", "0")],
)
def test_metrics_port_must_be_a_free_valid_port(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        env_metrics_endpoint({"METRICS_PORT": value}, host="127.0.0.1", port=8000)


def test_a_port_in_use_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        endpoint = metrics.MetricsEndpoint(host="127.0.0.1", port=port)
        with pytest.raises(metrics.MetricsBindError, match=f"127.0.0.1:{port}"):
            metrics.start_metrics("api", endpoint)
