"""Settings of the rate-limit service, read once from the environment."""

from collections.abc import Mapping
from importlib import resources
from pathlib import Path

import msgspec

from bulwark.common.metrics import MetricsEndpoint
from bulwark.common.settings import (
    Environment,
    SettingsError,
    env_environment,
    env_float,
    env_int,
    env_metrics_endpoint,
    env_str,
)
from bulwark.ratelimit.cluster import is_cluster_url

_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def packaged_rules_path() -> Path:
    """Path of the ``rules.yaml`` shipped inside the package."""
    return Path(str(resources.files("bulwark.ratelimit").joinpath("rules.yaml")))


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    """Configuration of one rate-limit server process.

    Attributes:
        environment: ``BULWARK_ENV``.
        host, port: where gRPC listens (``HOST``, default 127.0.0.1; ``PORT``, default 50051,
            0 picks a free port).
        redis_url: ``REDIS_URL``, required, e.g. ``redis://127.0.0.1:6379/0``; a
            ``redis+cluster://host:port`` URL names any one node of a Redis Cluster.
        redis_cluster: ``REDIS_CLUSTER`` (``true``/``false``, default false), or implied by a
            ``redis+cluster://`` (``rediss+cluster://``: TLS) URL: talk to a Redis Cluster.
        redis_key_prefix: ``REDIS_KEY_PREFIX``, default ``rl:``; prepended to every key;
            no ``{`` or ``}`` (the keys' hash tags follow it).
        rules_path: ``RATELIMIT_RULES``, the YAML rules file; default the packaged one.
        redis_timeout_seconds: ``REDIS_TIMEOUT_SECONDS``, default 0.5; bound on each Redis
            round trip, after which each rule's ``failure_mode`` answers (docs/ratelimit.md).
            Below the callers' deadline (1 s for Bulwark's services), so a Redis outage is
            answered by the failure modes before they give up; long enough that CPU load
            alone does not trip it.
        log_level: ``LOG_LEVEL``, default INFO.
        metrics: ``METRICS_HOST`` (default ``HOST``) and ``METRICS_PORT`` of the Prometheus
            endpoint; None (no endpoint) when ``METRICS_PORT`` is unset (docs/metrics.md).
    """

    environment: Environment
    host: str
    port: int
    redis_url: str
    redis_key_prefix: str
    rules_path: Path
    redis_timeout_seconds: float
    log_level: str
    redis_cluster: bool = False
    metrics: MetricsEndpoint | None = None


def from_env(environ: Mapping[str, str]) -> Settings:
    """Build `Settings` from environment variables (see `Settings` for names and defaults).

    Raises:
        SettingsError: a variable is missing or malformed, or the rules file does not exist.
    """
    rules_path = Path(env_str(environ, "RATELIMIT_RULES", str(packaged_rules_path())))
    if not rules_path.is_file():
        raise SettingsError(f"RATELIMIT_RULES: no such file {rules_path}")
    redis_url = env_str(environ, "REDIS_URL")
    if not redis_url.startswith(("redis://", "rediss://", "unix://")) and not is_cluster_url(
        redis_url
    ):
        raise SettingsError(
            "REDIS_URL must start with redis://, rediss://, unix://, redis+cluster:// "
            "or rediss+cluster://"
        )
    cluster_flag = env_str(environ, "REDIS_CLUSTER", "false").lower()
    if cluster_flag not in ("true", "false", "1", "0"):
        raise SettingsError("REDIS_CLUSTER must be true or false")
    key_prefix = env_str(environ, "REDIS_KEY_PREFIX", "rl:")
    if "{" in key_prefix or "}" in key_prefix:
        raise SettingsError("REDIS_KEY_PREFIX must not contain { or }")
    port = env_int(environ, "PORT", 50051)
    if port > 65535:
        raise SettingsError(f"PORT must be at most 65535, got {port}")
    log_level = env_str(environ, "LOG_LEVEL", "INFO").upper()
    if log_level not in _LOG_LEVELS:
        raise SettingsError(f"LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}")
    timeout = env_float(environ, "REDIS_TIMEOUT_SECONDS", 0.5, minimum=0.001)
    host = env_str(environ, "HOST", "127.0.0.1")
    return Settings(
        environment=env_environment(environ),
        host=host,
        port=port,
        metrics=env_metrics_endpoint(environ, host=host, port=port),
        redis_url=redis_url,
        redis_key_prefix=key_prefix,
        rules_path=rules_path,
        redis_timeout_seconds=timeout,
        log_level=log_level,
        redis_cluster=cluster_flag in ("true", "1") or is_cluster_url(redis_url),
    )
