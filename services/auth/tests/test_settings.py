"""Auth settings: safe defaults in development, explicit values required elsewhere."""

import pytest

from bulwark.auth.settings import from_env
from bulwark.common.settings import SettingsError


def test_development_defaults() -> None:
    settings = from_env({"DATABASE_URL": "postgresql://x/y"})
    assert settings.environment == "development"
    assert settings.access_token_ttl == 900
    assert settings.refresh_idle_ttl == 30 * 86400
    assert settings.refresh_absolute_ttl == 90 * 86400
    assert settings.argon2_memory_kib >= 19456


@pytest.mark.security(stride="S", asvs=("V13",))
def test_production_requires_an_https_issuer_and_a_key_folder() -> None:
    base = {"BULWARK_ENV": "production", "DATABASE_URL": "postgresql://x/y"}
    with pytest.raises(SettingsError, match="ISSUER"):
        from_env(base)
    with pytest.raises(SettingsError, match="https"):
        from_env({**base, "ISSUER": "http://auth.example", "KEYS_DIR": "/k"})
    with pytest.raises(SettingsError, match="KEYS_DIR"):
        from_env({**base, "ISSUER": "https://auth.example"})


@pytest.mark.security(stride="S", asvs=("V11.4",))
def test_weaker_argon2_parameters_are_refused() -> None:
    with pytest.raises(SettingsError, match="ARGON2_MEMORY_KIB"):
        from_env({"DATABASE_URL": "postgresql://x/y", "ARGON2_MEMORY_KIB": "1024"})


def test_sessions_settings_defaults_and_bounds() -> None:
    base = {"DATABASE_URL": "postgresql://x/y"}
    settings = from_env(base)
    assert settings.refresh_reuse_grace == 10
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.redis_key_prefix == "bulwark:"
    assert from_env({**base, "REFRESH_REUSE_GRACE_SECONDS": "0"}).refresh_reuse_grace == 0
    with pytest.raises(SettingsError, match="REFRESH_REUSE_GRACE_SECONDS"):
        from_env({**base, "REFRESH_REUSE_GRACE_SECONDS": "61"})
    with pytest.raises(SettingsError, match="REDIS_URL"):
        from_env({**base, "REDIS_URL": "http://cache"})
    production = {
        **base,
        "BULWARK_ENV": "production",
        "ISSUER": "https://auth.example",
        "KEYS_DIR": "/k",
    }
    with pytest.raises(SettingsError, match="REDIS_URL"):
        from_env(production)


def test_jwks_max_age_defaults_to_five_minutes_and_is_bounded() -> None:
    base = {"DATABASE_URL": "postgresql://x/y"}
    assert from_env(base).jwks_max_age == 300
    assert from_env({**base, "JWKS_MAX_AGE_SECONDS": "1"}).jwks_max_age == 1
    for bad in ("0", "86401", "soon"):
        with pytest.raises(SettingsError, match="JWKS_MAX_AGE_SECONDS"):
            from_env({**base, "JWKS_MAX_AGE_SECONDS": bad})


@pytest.mark.security(stride="D", asvs=("V2.4",))
def test_rate_limiter_failure_modes_are_one_table_per_endpoint() -> None:
    base = {"DATABASE_URL": "postgresql://x/y"}
    settings = from_env(base)
    assert settings.ratelimit_failure_modes == {
        "login": "deny",
        "register": "allow",
        "token": "allow",
        "sessions": "allow",
        "device_verification": "deny",
        "password_reset": "deny",
        "account_code": "deny",
        "account_mail": "deny",
        "reauthentication": "deny",
    }
    assert not settings.fails_open("login")
    assert settings.fails_open("register")
    changed = from_env({**base, "RATELIMIT_FAILURE_MODES": "login=allow, token=deny"})
    assert changed.ratelimit_failure_modes == {
        "login": "allow",
        "register": "allow",
        "token": "deny",
        "sessions": "allow",
        "device_verification": "deny",
        "password_reset": "deny",
        "account_code": "deny",
        "account_mail": "deny",
        "reauthentication": "deny",
    }
    with pytest.raises(SettingsError, match="unknown endpoint 'logout'"):
        from_env({**base, "RATELIMIT_FAILURE_MODES": "logout=deny"})
    with pytest.raises(SettingsError, match="login must be allow or deny"):
        from_env({**base, "RATELIMIT_FAILURE_MODES": "login=maybe"})
    with pytest.raises(SettingsError, match="RATELIMIT_FAILURE_MODES"):
        from_env({**base, "RATELIMIT_FAILURE_MODE": "allow"})  # the old name is refused


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_trusted_proxies_default_to_none() -> None:
    base = {"DATABASE_URL": "postgresql://x/y"}
    assert from_env(base).trusted_proxies == ()
    trusted = from_env({**base, "TRUSTED_PROXIES": "10.0.0.0/8,127.0.0.1"}).trusted_proxies
    assert [str(n) for n in trusted] == ["10.0.0.0/8", "127.0.0.1/32"]
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        from_env({**base, "TRUSTED_PROXIES": "10.0.0.0/33"})


def test_the_app_versions_url_is_required_outside_development_and_read_at_most_every_30_s() -> None:
    local = from_env({"DATABASE_URL": "postgresql://x/y"})
    assert local.app_versions_url == "http://127.0.0.1:8000/v1/app-versions"
    assert local.app_versions_cache_seconds == 30
    production = {
        "BULWARK_ENV": "production",
        "DATABASE_URL": "postgresql://x/y",
        "ISSUER": "https://auth.example",
        "KEYS_DIR": "/k",
        "REDIS_URL": "rediss://cache:6380/0",
        "EMAIL_FINGERPRINT_KEY": "k" * 32,
        "SMTP_URL": "smtps://mail.example",
        "MAIL_FROM": "Bulwark <no-reply@auth.example>",
    }
    with pytest.raises(SettingsError, match="APP_VERSIONS_URL"):
        from_env(production)
    url = "http://bulwark-api:8000/v1/app-versions"
    assert from_env({**production, "APP_VERSIONS_URL": url}).app_versions_url == url
    for bad in ("0", "31", "soon"):
        with pytest.raises(SettingsError, match="APP_VERSIONS_CACHE_SECONDS"):
            from_env({"DATABASE_URL": "postgresql://x/y", "APP_VERSIONS_CACHE_SECONDS": bad})
