"""Settings of the resource API, read once from the environment (see README's table)."""

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

from bulwark.api.uploads.config import KNOWN_TYPES, MAX_PUT_URL_SECONDS, S3Config, UploadConfig
from bulwark.common.app_versions.manifest import MAX_REFRESH_SECONDS
from bulwark.common.db import PoolMode
from bulwark.common.http import HttpLimits, TrustedProxies
from bulwark.common.metrics import MetricsEndpoint
from bulwark.common.rate_limits import FailureMode
from bulwark.common.settings import (
    Environment,
    SettingsError,
    env_app_versions_cache_seconds,
    env_database_url,
    env_environment,
    env_failure_modes,
    env_float,
    env_http_limits,
    env_int,
    env_metrics_endpoint,
    env_pool_mode,
    env_redis_url,
    env_str,
    env_trusted_proxies,
)

#: What each rate-limited endpoint does when the rate-limit service cannot answer within
#: ``RATELIMIT_TIMEOUT_MS`` (``RATELIMIT_FAILURE_MODES`` overrides entries). The deadline
#: (1 s) is for a limiter that is gone, not busy: a short one expires under ordinary CPU load
#: and lets the load itself switch the limits off. ``v1`` is every
#: ``/v1`` route (one limit per IP and per user, counted in ``caller``): it fails open,
#: because those limits protect capacity and a limiter outage should not take the app down.
RATELIMIT_FAILURE_MODES: Mapping[str, FailureMode] = {"v1": "allow"}
#: ``REQUIRE_VERIFIED_EMAIL``'s value for every authenticated operation.
EVERY_OPERATION = "*"
_OPERATION_ID = re.compile(r"[A-Za-z][A-Za-z0-9]{0,63}")


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the resource API is configured with."""

    environment: Environment
    host: str = "127.0.0.1"
    port: int = 8000
    metrics: MetricsEndpoint | None = None
    database_url: str
    #: Request-pool connections per process (``DATABASE_POOL_SIZE``).
    database_pool_size: int = 10
    #: Longest wait for a pooled connection and for each statement, in seconds
    #: (``DATABASE_TIMEOUT_SECONDS``); past it the request gets a 503.
    database_timeout: float = 3.0
    #: ``transaction`` when ``DATABASE_URL`` is a transaction pooler (PgBouncer's
    #: ``pool_mode = transaction``): no prepared statements are kept and the statement and
    #: idle-in-transaction timeouts are set in each transaction (``DATABASE_POOL_MODE``,
    #: default ``session``). Applies to ``database_read_url`` too.
    database_pool_mode: PoolMode = "session"
    #: A read-only URL (``DATABASE_READ_URL``) of a streaming replica of ``database_url``, for
    #: the list and read queries of notes; None (unset) reads everything from the primary.
    #: Its pool has the primary's size and timeout. Writes, and reads that decide a write,
    #: stay on the primary. Read-your-writes: after a write, the primary's WAL position is
    #: kept in Redis for the writer (``sub``) for ``read_your_writes_seconds``; the writer's
    #: reads go to the replica only once it has replayed that position, else to the primary,
    #: so a user never misses a note they just created or sees one they just deleted, on any
    #: device. Other users' writes (and anything written outside the API) may show up late,
    #: by at most ``replica_max_lag_seconds``. A replica that fails, or lags by more, sends
    #: reads to the primary (counted in ``bulwark_db_replica_fallbacks_total``); see
    #: ``bulwark.api.replica``.
    database_read_url: str | None = None
    #: Seconds a user's last write position is kept (``READ_YOUR_WRITES_SECONDS``); at least
    #: ``replica_max_lag_seconds`` + 2, so the lag bound covers a write before it is dropped.
    read_your_writes_seconds: int = 60
    #: The staleness bound of replica reads, in seconds (``REPLICA_MAX_LAG_SECONDS``): a
    #: replica that has not replayed what the primary had this long ago is skipped.
    replica_max_lag_seconds: int = 10
    jwks_url: str
    jwks_min_refresh: int = 30
    issuer: str
    audience: str = "bulwark-api"
    #: The longest access-token lifetime (``exp - iat``) accepted, in seconds: the auth
    #: service's ``ACCESS_TOKEN_TTL_SECONDS``, under the same name.
    access_token_ttl: int = 900
    ratelimit_target: str = "127.0.0.1:50051"
    ratelimit_timeout: float = 1.0
    ratelimit_failure_modes: dict[str, FailureMode] = msgspec.field(
        default_factory=lambda: dict(RATELIMIT_FAILURE_MODES)
    )
    trusted_proxies: TrustedProxies = ()
    http: HttpLimits = HttpLimits()  # the HTTP server's limits (HTTP_*)
    redis_url: str
    redis_key_prefix: str = "bulwark:"
    redis_timeout: float = 1.0
    revocation_failure_mode: Literal["allow", "deny"] = "deny"
    # Anomaly detectors (docs/anomalies.md): request bursts, reads of others' notes.
    anomaly_burst_window: int = 60
    anomaly_burst_floor: int = 120
    anomaly_burst_factor: float = 10.0
    anomaly_burst_alpha: float = 0.05
    anomaly_burst_cooldown: int = 3600
    anomaly_foreign_threshold: int = 5
    anomaly_foreign_window: int = 600
    #: Seconds the first answer to an ``Idempotency-Key`` is replayed
    #: (``IDEMPOTENCY_KEY_TTL_SECONDS``, 24 h; docs/safe-writes.md).
    idempotency_key_ttl: int = 86400
    #: Seconds between reads of the minimum-app-version manifest (``APP_VERSIONS_CACHE_SECONDS``,
    #: 1 to 30): a change is in force at this replica within that, plus one read's deadline
    #: (``database_timeout``). docs/app-versions.md.
    app_versions_cache_seconds: int = MAX_REFRESH_SECONDS
    uploads: UploadConfig = UploadConfig()
    #: Seconds an account deletion may stay unacknowledged in one process's hands before
    #: another takes it over (``ACCOUNT_DELETION_CLAIM_SECONDS``, 1 to 3600; docs/
    #: account-deletion.md): how soon the deletion a crashed replica was doing resumes.
    account_deletion_claim_seconds: float = 30.0
    #: The operations (``createNote``) whose caller's access token must say
    #: ``email_verified: true`` (``REQUIRE_VERIFIED_EMAIL``: a comma-separated list of
    #: operation ids, or `EVERY_OPERATION` for every authenticated one; empty by default).
    #: Names are checked against the app's routes at start-up (`bulwark.api.caller.
    #: check_verified_email_operations`); docs/email-verification.md.
    require_verified_email: frozenset[str] = frozenset()
    log_level: str = "INFO"

    def requires_verified_email(self, operation_id: str | None) -> bool:
        """Whether the caller of ``operation_id`` must have a verified email address."""
        required = self.require_verified_email
        return EVERY_OPERATION in required or operation_id in required

    def fails_open(self, endpoint: str) -> bool:
        """Whether ``endpoint`` (a key of `RATELIMIT_FAILURE_MODES`) is served when the
        rate-limit service cannot answer. Raises KeyError for an endpoint not in the table."""
        return self.ratelimit_failure_modes[endpoint] == "allow"


def _access_token_ttl(env: Mapping[str, str]) -> int:
    """``ACCESS_TOKEN_TTL_SECONDS``: 60 to 3600, as at the auth service."""
    ttl = env_int(env, "ACCESS_TOKEN_TTL_SECONDS", 900, minimum=60)
    if ttl > 3600:
        raise SettingsError("ACCESS_TOKEN_TTL_SECONDS must be at most 3600")
    return ttl


def _claim_seconds(env: Mapping[str, str]) -> float:
    """``ACCOUNT_DELETION_CLAIM_SECONDS``: 1 to 3600, default 30."""
    seconds = env_float(env, "ACCOUNT_DELETION_CLAIM_SECONDS", 30.0, minimum=1.0)
    if seconds > 3600:
        raise SettingsError("ACCOUNT_DELETION_CLAIM_SECONDS must be at most 3600")
    return seconds


def _require_verified_email(env: Mapping[str, str]) -> frozenset[str]:
    """``REQUIRE_VERIFIED_EMAIL``: operation ids separated by commas, or ``*`` alone; empty
    by default. Whether each names a route is checked by the app at start-up."""
    names = [name.strip() for name in env.get("REQUIRE_VERIFIED_EMAIL", "").split(",")]
    names = [name for name in names if name]
    if EVERY_OPERATION in names and len(names) > 1:
        raise SettingsError("REQUIRE_VERIFIED_EMAIL must be * alone or a list of operation ids")
    malformed = [n for n in names if n != EVERY_OPERATION and not _OPERATION_ID.fullmatch(n)]
    if malformed:
        raise SettingsError(
            "REQUIRE_VERIFIED_EMAIL must list operation ids (createNote,...) or be *;"
            f" not {malformed[0][:64]!r}"
        )
    return frozenset(names)


#: What the HTTP server reads of a request body beyond the largest upload (its framing).
UPLOAD_BODY_SLACK_BYTES = 64 * 1024


def _uploads(env: Mapping[str, str], local: bool) -> UploadConfig:
    """``UPLOADS_*`` and ``S3_*`` (`UploadConfig`). The local backend is refused outside
    development and test (its objects live on one replica's disk); there, uploads use S3
    when ``S3_BUCKET`` is set and are off otherwise."""
    default_backend = "local" if local else ("s3" if env.get("S3_BUCKET") else "off")
    backend = env_str(env, "UPLOADS_BACKEND", default_backend)
    if backend not in {"local", "s3", "off"}:
        raise SettingsError("UPLOADS_BACKEND must be local, s3 or off")
    if backend == "local" and not local:
        raise SettingsError("UPLOADS_BACKEND=local is for development and test only")
    types = tuple(
        t.strip()
        for t in env_str(env, "UPLOADS_CONTENT_TYPES", ",".join(KNOWN_TYPES)).split(",")
        if t.strip()
    )
    unknown = sorted(set(types) - set(KNOWN_TYPES))
    if unknown or not types:
        raise SettingsError(f"UPLOADS_CONTENT_TYPES must name some of {', '.join(KNOWN_TYPES)}")
    put_seconds = env_int(env, "UPLOADS_PUT_URL_SECONDS", MAX_PUT_URL_SECONDS, minimum=1)
    get_seconds = env_int(env, "UPLOADS_GET_URL_SECONDS", 300, minimum=1)
    if put_seconds > MAX_PUT_URL_SECONDS or get_seconds > 3600:
        raise SettingsError(
            "UPLOADS_PUT_URL_SECONDS must be at most 900, UPLOADS_GET_URL_SECONDS 3600"
        )
    signing_key = env.get("UPLOADS_SIGNING_KEY") or None
    if signing_key is not None and len(signing_key) < 32:
        raise SettingsError("UPLOADS_SIGNING_KEY must be at least 32 characters")
    s3 = None
    if backend == "s3":
        s3 = S3Config(
            bucket=env_str(env, "S3_BUCKET"),
            region=env_str(env, "S3_REGION", "us-east-1"),
            endpoint_url=env.get("S3_ENDPOINT_URL") or None,
            timeout=env_float(env, "S3_TIMEOUT_SECONDS", 5.0, minimum=0.1),
        )
    return UploadConfig(
        backend="s3" if backend == "s3" else "local" if backend == "local" else "off",
        content_types=types,
        max_bytes=env_int(env, "UPLOADS_MAX_BYTES", 10 * 1024 * 1024, minimum=1),
        max_pixels=env_int(env, "UPLOADS_MAX_PIXELS", 50_000_000, minimum=1),
        check_seconds=env_float(env, "UPLOADS_CHECK_SECONDS", 10.0, minimum=0.01),
        put_url_seconds=put_seconds,
        get_url_seconds=get_seconds,
        local_dir=Path(env_str(env, "UPLOADS_DIR", ".bulwark/uploads")),
        signing_key=signing_key,
        s3=s3,
    )


def _http_limits(env: Mapping[str, str], uploads: UploadConfig) -> HttpLimits:
    """``HTTP_*``; with the local uploads backend, which takes the files' bodies itself, the
    server reads bodies up to the largest upload (plus framing) instead of 1 MiB."""
    limits = env_http_limits(env)
    if uploads.backend != "local":
        return limits
    needed = uploads.max_bytes + UPLOAD_BODY_SLACK_BYTES
    return msgspec.structs.replace(limits, max_body_bytes=max(limits.max_body_bytes, needed))


def from_env(environ: Mapping[str, str] | None = None) -> ApiSettings:
    """Build the settings from ``environ`` (default: the process environment).

    Raises:
        SettingsError: a required setting is missing or malformed; outside development and
            test the issuer and JWKS URL must be given explicitly.
    """
    env = os.environ if environ is None else environ
    environment = env_environment(env)
    local = environment in {"development", "test"}
    if "RATELIMIT_FAILURE_MODE" in env:
        raise SettingsError("RATELIMIT_FAILURE_MODE is now RATELIMIT_FAILURE_MODES=v1=allow")
    revocation_mode = env_str(env, "REVOCATION_FAILURE_MODE", "deny")
    if revocation_mode not in {"allow", "deny"}:
        raise SettingsError("REVOCATION_FAILURE_MODE must be allow or deny")
    burst_alpha = env_float(env, "ANOMALY_BURST_ALPHA", 0.05, minimum=0.001)
    if burst_alpha > 1:
        raise SettingsError("ANOMALY_BURST_ALPHA must be at most 1")
    host, port = env_str(env, "HOST", "127.0.0.1"), env_int(env, "PORT", 8000)
    read_your_writes = env_int(env, "READ_YOUR_WRITES_SECONDS", 60, minimum=1)
    max_lag = env_int(env, "REPLICA_MAX_LAG_SECONDS", 10, minimum=1)
    uploads = _uploads(env, local)
    if read_your_writes < max_lag + 2:
        raise SettingsError("READ_YOUR_WRITES_SECONDS must be at least REPLICA_MAX_LAG_SECONDS + 2")
    return ApiSettings(
        environment=environment,
        host=host,
        port=port,
        metrics=env_metrics_endpoint(env, host=host, port=port),
        database_url=env_database_url(env, "DATABASE_URL"),
        database_pool_size=env_int(env, "DATABASE_POOL_SIZE", 10, minimum=1),
        database_timeout=env_float(env, "DATABASE_TIMEOUT_SECONDS", 3.0, minimum=0.1),
        database_pool_mode=env_pool_mode(env),
        database_read_url=(
            env_database_url(env, "DATABASE_READ_URL") if env.get("DATABASE_READ_URL") else None
        ),
        read_your_writes_seconds=read_your_writes,
        replica_max_lag_seconds=max_lag,
        jwks_url=env_str(
            env, "JWKS_URL", "http://127.0.0.1:8001/.well-known/jwks.json" if local else None
        ),
        jwks_min_refresh=env_int(env, "JWKS_MIN_REFRESH_SECONDS", 30, minimum=1),
        issuer=env_str(env, "ISSUER", "http://127.0.0.1:8001" if local else None).rstrip("/"),
        audience=env_str(env, "AUDIENCE", "bulwark-api"),
        access_token_ttl=_access_token_ttl(env),
        ratelimit_target=env_str(env, "RATELIMIT_TARGET", "127.0.0.1:50051"),
        ratelimit_timeout=env_int(env, "RATELIMIT_TIMEOUT_MS", 1000, minimum=1) / 1000,
        ratelimit_failure_modes=env_failure_modes(
            env, "RATELIMIT_FAILURE_MODES", RATELIMIT_FAILURE_MODES
        ),
        trusted_proxies=env_trusted_proxies(env),
        http=_http_limits(env, uploads),
        redis_url=env_redis_url(env, "redis://127.0.0.1:6379/0" if local else None),
        redis_key_prefix=env_str(env, "REDIS_KEY_PREFIX", "bulwark:"),
        redis_timeout=env_float(env, "REDIS_TIMEOUT_SECONDS", 1.0, minimum=0.001),
        revocation_failure_mode="allow" if revocation_mode == "allow" else "deny",
        anomaly_burst_window=env_int(env, "ANOMALY_BURST_WINDOW_SECONDS", 60, minimum=1),
        anomaly_burst_floor=env_int(env, "ANOMALY_BURST_FLOOR", 120, minimum=1),
        anomaly_burst_factor=env_float(env, "ANOMALY_BURST_FACTOR", 10.0, minimum=1.0),
        anomaly_burst_alpha=burst_alpha,
        anomaly_burst_cooldown=env_int(env, "ANOMALY_BURST_COOLDOWN_SECONDS", 3600, minimum=1),
        anomaly_foreign_threshold=env_int(env, "ANOMALY_FOREIGN_THRESHOLD", 5, minimum=1),
        anomaly_foreign_window=env_int(env, "ANOMALY_FOREIGN_WINDOW_SECONDS", 600, minimum=1),
        idempotency_key_ttl=env_int(env, "IDEMPOTENCY_KEY_TTL_SECONDS", 86400, minimum=1),
        app_versions_cache_seconds=env_app_versions_cache_seconds(env),
        uploads=uploads,
        account_deletion_claim_seconds=_claim_seconds(env),
        require_verified_email=_require_verified_email(env),
        log_level=env_str(env, "LOG_LEVEL", "INFO"),
    )
