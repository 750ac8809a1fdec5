"""Settings of the auth service, read once from the environment (see README's table)."""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import msgspec

from bulwark.auth.mail.delivery import SmtpSettings, parse_smtp_url
from bulwark.auth.oauth.clients import OAuthClient, parse_clients
from bulwark.auth.users.password_policy import PRESETS, PresetName, UnreachableAnswer
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
    env_header_name,
    env_http_limits,
    env_int,
    env_metrics_endpoint,
    env_pool_mode,
    env_redis_url,
    env_str,
    env_trusted_proxies,
)

#: Longest wait for one read of ``APP_VERSIONS_URL`` (connect, send, answer), in seconds.
APP_VERSIONS_TIMEOUT_SECONDS = 2.0
#: Longest ``HIBP_TIMEOUT_SECONDS`` accepted: the check runs inside a request.
MAX_HIBP_TIMEOUT_SECONDS = 5.0
#: Have I Been Pwned's Pwned Passwords range endpoint (``HIBP_RANGE_URL``'s default).
HIBP_RANGE_URL = "https://api.pwnedpasswords.com/range/"
#: What each rate-limited endpoint does when the rate-limit service cannot answer within
#: ``RATELIMIT_TIMEOUT_MS`` (``RATELIMIT_FAILURE_MODES`` overrides entries). Login fails
#: closed (503): an unlimited login window is an open door to credential stuffing.
#: Registration and the token endpoint fail open: their limits protect capacity, and a
#: limiter outage should neither stop sign-ups nor log every app out at its next refresh.
#: ``sessions`` (the routes of a signed-in caller: logout, the session list) fail open too.
RATELIMIT_FAILURE_MODES: Mapping[str, FailureMode] = {
    "login": "deny",
    "register": "allow",
    "token": "allow",
    "sessions": "allow",
    # User-code lookups on /device: the limit is what stops brute force (RFC 8628 §5.1).
    "device_verification": "deny",
    # The account flows (docs/account.md) send mail or check secrets: unlimited, they would
    # bomb inboxes or let codes and passwords be guessed.
    "password_reset": "deny",
    "account_code": "deny",
    "account_mail": "deny",
    "reauthentication": "deny",
}


class AuthSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the auth service is configured with. Durations are in seconds."""

    environment: Environment
    host: str = "127.0.0.1"
    port: int = 8001
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
    #: default ``session``).
    database_pool_mode: PoolMode = "session"
    keys_dir: Path
    issuer: str
    audience: str = "bulwark-api"
    client_id: str = "bulwark-mobile"
    access_token_ttl: int = 900
    jwks_max_age: int = 300
    refresh_idle_ttl: int = 30 * 86400
    refresh_absolute_ttl: int = 90 * 86400
    refresh_reuse_grace: int = 10
    redis_url: str
    redis_key_prefix: str = "bulwark:"
    redis_timeout: float = 0.5
    revocation_resync_interval: int = 10
    ratelimit_target: str = "127.0.0.1:50051"
    ratelimit_timeout: float = 1.0
    ratelimit_failure_modes: dict[str, FailureMode] = msgspec.field(
        default_factory=lambda: dict(RATELIMIT_FAILURE_MODES)
    )
    trusted_proxies: TrustedProxies = ()
    http: HttpLimits = HttpLimits()  # the HTTP server's limits (HTTP_*)
    geo_country_header: str = "cloudfront-viewer-country"
    anomaly_inactivity_days: int = 30
    argon2_memory_kib: int = 19456
    argon2_time_cost: int = 2
    argon2_parallelism: int = 1
    #: Where the resource API publishes the minimum app versions (``APP_VERSIONS_URL``,
    #: its ``GET /v1/app-versions``; required outside development and test), read every
    #: ``app_versions_cache_seconds`` (``APP_VERSIONS_CACHE_SECONDS``, 1 to 30), each read
    #: waiting at most `APP_VERSIONS_TIMEOUT_SECONDS`. docs/app-versions.md.
    app_versions_url: str
    app_versions_cache_seconds: int = MAX_REFRESH_SECONDS
    log_level: str = "INFO"
    email_fingerprint_key: bytes = b""
    #: The registered OAuth clients (``OAUTH_CLIENTS``; `bulwark.auth.oauth.clients`).
    oauth_clients: tuple[OAuthClient, ...] = ()
    #: Lifetime of a device code and its user code (``DEVICE_CODE_TTL_SECONDS``, RFC 8628
    #: ``expires_in``) and the minimum polling interval (``DEVICE_POLL_INTERVAL_SECONDS``).
    device_code_ttl: int = 600
    device_poll_interval: int = 5
    #: Lifetime of an authorization code (RFC 6749 §4.1.2 recommends at most 10 minutes;
    #: RFC 9700 asks for short: at most 60 s here).
    authorization_code_ttl: int = 60
    #: How long a sign-in on the pages (``/signin``) lasts (``PAGE_SESSION_TTL_SECONDS``).
    page_session_ttl: int = 600
    #: Where mail goes (``SMTP_URL``, ``SMTP_USERNAME``, ``SMTP_PASSWORD``, ``MAIL_FROM``,
    #: ``SMTP_CA_FILE``; docs/mail.md); required in production. None elsewhere means mail
    #: waits in the outbox.
    smtp: SmtpSettings | None = None
    #: Where the links in account mails point (``ACCOUNT_LINKS_URL``): the pages under
    #: ``{ISSUER}/account`` by default, or the app's universal links (docs/account.md).
    account_links_url: str = "http://127.0.0.1:8001/account"
    #: Lifetimes of the one-time tokens mailed to users, in seconds.
    email_verification_ttl: int = 24 * 3600
    password_reset_ttl: int = 30 * 60
    #: How long the old address may undo an email change (``EMAIL_CHANGE_UNDO_SECONDS``).
    email_change_undo_ttl: int = 7 * 86400
    #: Whether an account whose address is not verified may log in (``UNVERIFIED_LOGIN``:
    #: ``allow``, the default, or ``deny``); the API can still require it per route.
    unverified_login: bool = True
    #: The password policy's preset (``PASSWORD_POLICY``: ``brief`` or ``nist``) and the app's
    #: name it refuses inside passwords (``APP_NAME``); docs/passwords.md.
    password_policy: PresetName = "brief"  # noqa: S105  # a preset's name, not a password
    app_name: str = "Bulwark"  # also the name mails give the app
    #: ``BREACHED_PASSWORD_CHECK=hibp`` asks Have I Been Pwned's range API
    #: (``HIBP_RANGE_URL``) about each new password, waiting at most ``hibp_timeout``
    #: seconds (``HIBP_TIMEOUT_SECONDS``, at most 5); without an answer the password is
    #: accepted (``BREACHED_PASSWORD_UNREACHABLE=allow``) or the request answered 503 (``deny``).
    breach_check: Literal["off", "hibp"] = "off"
    hibp_range_url: str = HIBP_RANGE_URL
    hibp_timeout: float = 1.0
    breach_check_unreachable: UnreachableAnswer = "allow"

    def oauth_client(self, client_id: str | None) -> OAuthClient | None:
        """The registered client ``client_id``, or None."""
        return next((c for c in self.oauth_clients if c.client_id == client_id), None)

    def fails_open(self, endpoint: str) -> bool:
        """Whether ``endpoint`` (a key of `RATELIMIT_FAILURE_MODES`) is served when the
        rate-limit service cannot answer. Raises KeyError for an endpoint not in the table."""
        return self.ratelimit_failure_modes[endpoint] == "allow"

    @property
    def generates_keys(self) -> bool:
        """Development and test generate a signing key on first run; others never do."""
        return self.environment in {"development", "test"}


#: The key of `security_events.email_fingerprint` in development and test only.
DEVELOPMENT_EMAIL_FINGERPRINT_KEY = "development-only-email-fingerprint-key"


def _email_fingerprint_key(env: Mapping[str, str], *, local: bool) -> bytes:
    """``EMAIL_FINGERPRINT_KEY``: at least 32 characters; required outside development and
    test, where the development key is refused."""
    key = env_str(
        env, "EMAIL_FINGERPRINT_KEY", DEVELOPMENT_EMAIL_FINGERPRINT_KEY if local else None
    )
    if not local and key == DEVELOPMENT_EMAIL_FINGERPRINT_KEY:
        raise SettingsError("EMAIL_FINGERPRINT_KEY must not be the development key")
    if len(key) < 32:
        raise SettingsError("EMAIL_FINGERPRINT_KEY must be at least 32 characters")
    return key.encode()


def _smtp(env: Mapping[str, str], *, environment: Environment) -> SmtpSettings | None:
    """``SMTP_URL`` and its companions: required in production; elsewhere, without it, mail
    waits in the outbox (a warning at start-up says so). Plain ``smtp://`` only in
    development and test."""
    local = environment in {"development", "test"}
    url = env_str(env, "SMTP_URL", None if environment == "production" else "")
    if not url:
        return None
    return parse_smtp_url(
        url,
        sender=env_str(env, "MAIL_FROM", "Bulwark <no-reply@bulwark.localhost>" if local else None),
        username=env.get("SMTP_USERNAME"),
        password=env.get("SMTP_PASSWORD"),
        ca_file=env.get("SMTP_CA_FILE"),
        allow_plain=local,
    )


def _unverified_login(env: Mapping[str, str]) -> bool:
    value = env_str(env, "UNVERIFIED_LOGIN", "allow")
    if value not in {"allow", "deny"}:
        raise SettingsError("UNVERIFIED_LOGIN must be allow or deny")
    return value == "allow"


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """The variable ``name``, one of ``choices`` (default: the first).

    Raises:
        SettingsError: another value.
    """
    value = env_str(env, name, choices[0]).strip().lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}")
    return value


def _hibp_range_url(env: Mapping[str, str], *, local: bool) -> str:
    """``HIBP_RANGE_URL``: https outside development and test (the prefix of a password's
    hash is not for every network hop to read)."""
    url = env_str(env, "HIBP_RANGE_URL", HIBP_RANGE_URL)
    schemes = ("https://", "http://") if local else ("https://",)
    if not url.startswith(schemes):
        raise SettingsError("HIBP_RANGE_URL must be an https URL outside development and test")
    return url


def from_env(environ: Mapping[str, str] | None = None) -> AuthSettings:
    """Build the settings from ``environ`` (default: the process environment).

    Raises:
        SettingsError: a required setting is missing or a value is malformed; outside
            development the issuer must be given explicitly and use https.
    """
    env = os.environ if environ is None else environ
    environment = env_environment(env)
    local = environment in {"development", "test"}
    issuer = env_str(env, "ISSUER", "http://127.0.0.1:8001" if local else None)
    if not local and not issuer.startswith("https://"):
        raise SettingsError("ISSUER must be an https URL outside development and test")
    if "RATELIMIT_FAILURE_MODE" in env:
        raise SettingsError("RATELIMIT_FAILURE_MODE is now RATELIMIT_FAILURE_MODES=login=deny")
    host, port = env_str(env, "HOST", "127.0.0.1"), env_int(env, "PORT", 8001)
    settings = AuthSettings(
        environment=environment,
        host=host,
        port=port,
        metrics=env_metrics_endpoint(env, host=host, port=port),
        database_url=env_database_url(env, "DATABASE_URL"),
        database_pool_size=env_int(env, "DATABASE_POOL_SIZE", 10, minimum=1),
        database_timeout=env_float(env, "DATABASE_TIMEOUT_SECONDS", 3.0, minimum=0.1),
        database_pool_mode=env_pool_mode(env),
        keys_dir=Path(env_str(env, "KEYS_DIR", ".bulwark/keys" if local else None)),
        issuer=issuer.rstrip("/"),
        audience=env_str(env, "AUDIENCE", "bulwark-api"),
        client_id=env_str(env, "CLIENT_ID", "bulwark-mobile"),
        access_token_ttl=env_int(env, "ACCESS_TOKEN_TTL_SECONDS", 900, minimum=60),
        jwks_max_age=env_int(env, "JWKS_MAX_AGE_SECONDS", 300, minimum=1),
        refresh_idle_ttl=env_int(env, "REFRESH_IDLE_TTL_SECONDS", 30 * 86400, minimum=60),
        refresh_absolute_ttl=env_int(env, "REFRESH_ABSOLUTE_TTL_SECONDS", 90 * 86400, minimum=60),
        refresh_reuse_grace=env_int(env, "REFRESH_REUSE_GRACE_SECONDS", 10),
        redis_url=env_redis_url(env, "redis://127.0.0.1:6379/0" if local else None),
        redis_key_prefix=env_str(env, "REDIS_KEY_PREFIX", "bulwark:"),
        redis_timeout=env_float(env, "REDIS_TIMEOUT_SECONDS", 0.5, minimum=0.001),
        revocation_resync_interval=env_int(env, "REVOCATION_RESYNC_SECONDS", 10, minimum=1),
        ratelimit_target=env_str(env, "RATELIMIT_TARGET", "127.0.0.1:50051"),
        ratelimit_timeout=env_int(env, "RATELIMIT_TIMEOUT_MS", 1000, minimum=1) / 1000,
        ratelimit_failure_modes=env_failure_modes(
            env, "RATELIMIT_FAILURE_MODES", RATELIMIT_FAILURE_MODES
        ),
        trusted_proxies=env_trusted_proxies(env),
        http=env_http_limits(env),
        geo_country_header=env_header_name(env, "GEO_COUNTRY_HEADER", "CloudFront-Viewer-Country"),
        anomaly_inactivity_days=env_int(env, "ANOMALY_INACTIVITY_DAYS", 30, minimum=1),
        argon2_memory_kib=env_int(env, "ARGON2_MEMORY_KIB", 19456, minimum=19456),
        argon2_time_cost=env_int(env, "ARGON2_TIME_COST", 2, minimum=2),
        argon2_parallelism=env_int(env, "ARGON2_PARALLELISM", 1, minimum=1),
        app_versions_url=env_str(
            env, "APP_VERSIONS_URL", "http://127.0.0.1:8000/v1/app-versions" if local else None
        ),
        app_versions_cache_seconds=env_app_versions_cache_seconds(env),
        log_level=env_str(env, "LOG_LEVEL", "INFO"),
        email_fingerprint_key=_email_fingerprint_key(env, local=local),
        oauth_clients=parse_clients(
            env.get("OAUTH_CLIENTS", ""),
            mobile_client_id=env_str(env, "CLIENT_ID", "bulwark-mobile"),
        ),
        device_code_ttl=env_int(env, "DEVICE_CODE_TTL_SECONDS", 600, minimum=10),
        device_poll_interval=env_int(env, "DEVICE_POLL_INTERVAL_SECONDS", 5, minimum=1),
        authorization_code_ttl=env_int(env, "AUTHORIZATION_CODE_TTL_SECONDS", 60, minimum=5),
        page_session_ttl=env_int(env, "PAGE_SESSION_TTL_SECONDS", 600, minimum=60),
        smtp=_smtp(env, environment=environment),
        account_links_url=env_str(env, "ACCOUNT_LINKS_URL", f"{issuer.rstrip('/')}/account"),
        email_change_undo_ttl=env_int(env, "EMAIL_CHANGE_UNDO_SECONDS", 7 * 86400, minimum=3600),
        unverified_login=_unverified_login(env),
        password_policy=cast("PresetName", _choice(env, "PASSWORD_POLICY", tuple(PRESETS))),
        app_name=env_str(env, "APP_NAME", "Bulwark").strip() or "Bulwark",
        breach_check=cast(
            "Literal['off', 'hibp']", _choice(env, "BREACHED_PASSWORD_CHECK", ("off", "hibp"))
        ),
        hibp_range_url=_hibp_range_url(env, local=local),
        hibp_timeout=env_float(env, "HIBP_TIMEOUT_SECONDS", 1.0, minimum=0.05),
        breach_check_unreachable=cast(
            "UnreachableAnswer", _choice(env, "BREACHED_PASSWORD_UNREACHABLE", ("allow", "deny"))
        ),
    )
    if settings.access_token_ttl > 3600:
        raise SettingsError("ACCESS_TOKEN_TTL_SECONDS must be at most 3600")
    if settings.refresh_reuse_grace > 60:
        raise SettingsError("REFRESH_REUSE_GRACE_SECONDS must be at most 60")
    if settings.jwks_max_age > 86400:
        raise SettingsError("JWKS_MAX_AGE_SECONDS must be at most 86400")
    if settings.device_code_ttl > 1800:
        raise SettingsError("DEVICE_CODE_TTL_SECONDS must be at most 1800")
    if settings.authorization_code_ttl > 60:
        raise SettingsError("AUTHORIZATION_CODE_TTL_SECONDS must be at most 60")
    if settings.page_session_ttl > 3600:
        raise SettingsError("PAGE_SESSION_TTL_SECONDS must be at most 3600")
    if not local and not settings.account_links_url.startswith("https://"):
        raise SettingsError("ACCOUNT_LINKS_URL must be an https URL outside development and test")
    if settings.hibp_timeout > MAX_HIBP_TIMEOUT_SECONDS:
        raise SettingsError("HIBP_TIMEOUT_SECONDS must be at most 5")
    if settings.refresh_idle_ttl > settings.refresh_absolute_ttl:
        raise SettingsError("REFRESH_IDLE_TTL_SECONDS must not exceed the absolute lifetime")
    return settings
