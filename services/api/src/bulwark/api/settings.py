"""Settings of the resource API, read once from the environment (see README's table)."""

import os
from collections.abc import Mapping
from typing import Literal

import msgspec

from bulwark.common.settings import (
    Environment,
    SettingsError,
    env_environment,
    env_float,
    env_int,
    env_redis_url,
    env_str,
)


class ApiSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the resource API is configured with."""

    environment: Environment
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str
    jwks_url: str
    jwks_min_refresh: int = 30
    issuer: str
    audience: str = "bulwark-api"
    ratelimit_target: str = "127.0.0.1:50051"
    ratelimit_timeout: float = 0.1
    ratelimit_failure_mode: Literal["allow", "deny"] = "allow"
    redis_url: str
    redis_key_prefix: str = "bulwark:"
    redis_timeout: float = 0.1
    revocation_failure_mode: Literal["allow", "deny"] = "deny"
    log_level: str = "INFO"


def from_env(environ: Mapping[str, str] | None = None) -> ApiSettings:
    """Build the settings from ``environ`` (default: the process environment).

    Raises:
        SettingsError: a required setting is missing or malformed; outside development and
            test the issuer and JWKS URL must be given explicitly.
    """
    env = os.environ if environ is None else environ
    environment = env_environment(env)
    local = environment in {"development", "test"}
    failure_mode = env_str(env, "RATELIMIT_FAILURE_MODE", "allow")
    if failure_mode not in {"allow", "deny"}:
        raise SettingsError("RATELIMIT_FAILURE_MODE must be allow or deny")
    revocation_mode = env_str(env, "REVOCATION_FAILURE_MODE", "deny")
    if revocation_mode not in {"allow", "deny"}:
        raise SettingsError("REVOCATION_FAILURE_MODE must be allow or deny")
    return ApiSettings(
        environment=environment,
        host=env_str(env, "HOST", "127.0.0.1"),
        port=env_int(env, "PORT", 8000),
        database_url=env_str(env, "DATABASE_URL"),
        jwks_url=env_str(
            env, "JWKS_URL", "http://127.0.0.1:8001/.well-known/jwks.json" if local else None
        ),
        jwks_min_refresh=env_int(env, "JWKS_MIN_REFRESH_SECONDS", 30, minimum=1),
        issuer=env_str(env, "ISSUER", "http://127.0.0.1:8001" if local else None).rstrip("/"),
        audience=env_str(env, "AUDIENCE", "bulwark-api"),
        ratelimit_target=env_str(env, "RATELIMIT_TARGET", "127.0.0.1:50051"),
        ratelimit_timeout=env_int(env, "RATELIMIT_TIMEOUT_MS", 100, minimum=1) / 1000,
        ratelimit_failure_mode="deny" if failure_mode == "deny" else "allow",
        redis_url=env_redis_url(env, "redis://127.0.0.1:6379/0" if local else None),
        redis_key_prefix=env_str(env, "REDIS_KEY_PREFIX", "bulwark:"),
        redis_timeout=env_float(env, "REDIS_TIMEOUT_SECONDS", 0.1, minimum=0.001),
        revocation_failure_mode="allow" if revocation_mode == "allow" else "deny",
        log_level=env_str(env, "LOG_LEVEL", "INFO"),
    )
