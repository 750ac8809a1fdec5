"""Typed reading of environment variables (12-factor), shared by every service's settings.

Each service defines one frozen settings object built once at start-up by a ``from_env``
function; domain code receives that object and never reads ``os.environ`` itself.
"""

import re
from collections.abc import Mapping
from typing import Literal, get_args
from urllib.parse import urlsplit

from bulwark.common.app_versions.manifest import MAX_REFRESH_SECONDS
from bulwark.common.db import POOL_MODES, PoolMode
from bulwark.common.http import HttpLimits, TrustedProxies, parse_trusted_proxies
from bulwark.common.metrics import MetricsEndpoint

Environment = Literal["development", "test", "staging", "production"]
ENVIRONMENTS: tuple[str, ...] = get_args(Environment)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def env_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return the variable ``name``, or ``default``.

    Raises:
        SettingsError: the variable is unset or empty and there is no default.
    """
    value = environ.get(name, "").strip()
    if value:
        return value
    if default is None:
        raise SettingsError(f"{name} must be set")
    return default


def env_int(environ: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    """Return the variable ``name`` as an integer of at least ``minimum``.

    Raises:
        SettingsError: the value is not an integer or is below ``minimum``.
    """
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float = 0.0
) -> float:
    """Return the variable ``name`` as a float of at least ``minimum``.

    Raises:
        SettingsError: the value is not a number or is below ``minimum``.
    """
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_environment(environ: Mapping[str, str]) -> Environment:
    """Return ``BULWARK_ENV`` (default ``development``).

    Raises:
        SettingsError: the value is not one of development, test, staging, production.
    """
    value = env_str(environ, "BULWARK_ENV", "development")
    if value not in ENVIRONMENTS:
        raise SettingsError(f"BULWARK_ENV must be one of {', '.join(ENVIRONMENTS)}")
    return value  # type: ignore[return-value]  # narrowed by the membership check above


def env_pool_mode(environ: Mapping[str, str]) -> PoolMode:
    """Return ``DATABASE_POOL_MODE``: ``session`` (default: ``DATABASE_URL`` is Postgres itself,
    or a session pooler) or ``transaction`` (a transaction pooler such as PgBouncer's
    ``pool_mode = transaction``; see `bulwark.common.db`).

    Raises:
        SettingsError: another value.
    """
    value = env_str(environ, "DATABASE_POOL_MODE", "session")
    if value not in POOL_MODES:
        raise SettingsError(f"DATABASE_POOL_MODE must be one of {', '.join(POOL_MODES)}")
    return value


def env_database_url(environ: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return the variable ``name`` (``DATABASE_URL``, ``DATABASE_READ_URL``), or ``default``:
    a ``postgresql://`` URL, with any special character of the password percent-encoded.

    Raises:
        SettingsError: unset without a default, another scheme, or a URL that does not parse
            as one. The message never repeats the value: it may hold a password, and a
            misparsed one would otherwise surface in a port or host error.
    """
    url = env_str(environ, name, default)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parses the port, raising ValueError for a misparsed URL
    except ValueError:
        parts = None
    if parts is None or parts.fragment or "@" in parts.path:
        raise SettingsError(
            f"{name} is not a valid URL (percent-encode special characters such as # / ? @ "
            "in the user name and password)"
        )
    if parts.scheme not in ("postgresql", "postgres"):
        raise SettingsError(f"{name} must start with postgresql://")
    return url


def env_redis_url(environ: Mapping[str, str], default: str | None = None) -> str:
    """Return ``REDIS_URL`` (or ``default``): a ``redis://``, ``rediss://`` or ``unix://`` URL.

    Raises:
        SettingsError: unset without a default, or another scheme.
    """
    url = env_str(environ, "REDIS_URL", default)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError("REDIS_URL must start with redis://, rediss:// or unix://")
    return url


def env_failure_modes(
    environ: Mapping[str, str], name: str, defaults: Mapping[str, Literal["allow", "deny"]]
) -> dict[str, Literal["allow", "deny"]]:
    """Return ``defaults`` (endpoint -> ``allow``/``deny``) overridden by the variable ``name``.

    The variable reads ``"login=deny, token=allow"``: comma-separated ``endpoint=mode``
    pairs; endpoints it does not name keep their default.

    Raises:
        SettingsError: a pair is malformed, names an endpoint not in ``defaults``, or a mode
            other than allow or deny.
    """
    modes = dict(defaults)
    for pair in filter(None, (p.strip() for p in environ.get(name, "").split(","))):
        endpoint, _, mode = (part.strip() for part in pair.partition("="))
        if endpoint not in defaults:
            known = ", ".join(sorted(defaults))
            raise SettingsError(f"{name}: unknown endpoint {endpoint!r} (known: {known})")
        if mode not in {"allow", "deny"}:
            raise SettingsError(f"{name}: {endpoint} must be allow or deny, got {mode!r}")
        modes[endpoint] = "allow" if mode == "allow" else "deny"
    return modes


# An HTTP field name is a token (RFC 9110 §5.1, §5.6.2).
_FIELD_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}\Z")


def env_header_name(environ: Mapping[str, str], name: str, default: str) -> str:
    """Return the variable ``name`` as an HTTP header name, lower-cased (as ASGI carries
    header names), or ``default`` lower-cased.

    Raises:
        SettingsError: the value is not an RFC 9110 field name of at most 64 characters.
    """
    value = env_str(environ, name, default)
    if not _FIELD_NAME.match(value):
        raise SettingsError(f"{name} must be an HTTP header name, got {value!r}")
    return value.lower()


def env_trusted_proxies(environ: Mapping[str, str]) -> TrustedProxies:
    """Return ``TRUSTED_PROXIES``: the proxies whose ``X-Forwarded-For`` entries are believed.

    Addresses or CIDRs separated by commas or spaces (``"10.0.0.0/8, 127.0.0.1"``); unset
    or empty trusts none, so the TCP peer is the client.

    Raises:
        SettingsError: an entry is neither an address nor a network.
    """
    try:
        return parse_trusted_proxies(environ.get("TRUSTED_PROXIES", ""))
    except ValueError as exc:
        raise SettingsError(f"TRUSTED_PROXIES: {exc}") from None


def env_metrics_endpoint(
    environ: Mapping[str, str], *, host: str, port: int
) -> MetricsEndpoint | None:
    """Return where the Prometheus endpoint listens, or None when ``METRICS_PORT`` is unset.

    ``METRICS_PORT`` (0 to 65535; 0 picks a free port) turns the endpoint on;
    ``METRICS_HOST`` defaults to ``host``, the service's own ``HOST``. ``port`` is the
    service's public ``PORT``, which the endpoint may not share (docs/metrics.md).

    Raises:
        SettingsError: the port is not an integer in range, or equals ``port``.
    """
    if not environ.get("METRICS_PORT", "").strip():
        return None
    metrics_port = env_int(environ, "METRICS_PORT", 0)
    if metrics_port > 65535:
        raise SettingsError(f"METRICS_PORT must be at most 65535, got {metrics_port}")
    if metrics_port != 0 and metrics_port == port:
        raise SettingsError("METRICS_PORT must differ from PORT: /metrics is never public")
    return MetricsEndpoint(host=env_str(environ, "METRICS_HOST", host), port=metrics_port)


def env_http_limits(environ: Mapping[str, str]) -> HttpLimits:
    """Return the HTTP server's limits (`HttpLimits`, docs/http-limits.md):
    ``HTTP_MAX_HEADER_BYTES`` (default 16384, at least 1024), ``HTTP_MAX_HEADERS`` (100, at
    least 16), ``HTTP_HEADER_TIMEOUT_SECONDS`` (10, at least 0.1),
    ``HTTP_BODY_TIMEOUT_SECONDS`` (30, at least 0.1), ``HTTP_MAX_CONCURRENCY`` (64, at
    least 1) and ``HTTP_QUEUE_TIMEOUT_SECONDS`` (2, at least 0).

    Raises:
        SettingsError: a value is malformed or below its minimum.
    """
    default = HttpLimits()
    return HttpLimits(
        max_header_bytes=env_int(
            environ, "HTTP_MAX_HEADER_BYTES", default.max_header_bytes, minimum=1024
        ),
        max_headers=env_int(environ, "HTTP_MAX_HEADERS", default.max_headers, minimum=16),
        header_timeout=env_float(
            environ, "HTTP_HEADER_TIMEOUT_SECONDS", default.header_timeout, minimum=0.1
        ),
        body_timeout=env_float(
            environ, "HTTP_BODY_TIMEOUT_SECONDS", default.body_timeout, minimum=0.1
        ),
        max_concurrency=env_int(
            environ, "HTTP_MAX_CONCURRENCY", default.max_concurrency, minimum=1
        ),
        queue_timeout=env_float(
            environ, "HTTP_QUEUE_TIMEOUT_SECONDS", default.queue_timeout, minimum=0.0
        ),
    )


def env_app_versions_cache_seconds(environ: Mapping[str, str]) -> int:
    """``APP_VERSIONS_CACHE_SECONDS``: how often a process reads the minimum-app-version
    manifest, 1 to 30 seconds (default 30; docs/app-versions.md).

    Raises:
        SettingsError: not an integer, or outside 1 to 30.
    """
    seconds = env_int(environ, "APP_VERSIONS_CACHE_SECONDS", MAX_REFRESH_SECONDS, minimum=1)
    if seconds > MAX_REFRESH_SECONDS:
        raise SettingsError(f"APP_VERSIONS_CACHE_SECONDS must be at most {MAX_REFRESH_SECONDS}")
    return seconds
