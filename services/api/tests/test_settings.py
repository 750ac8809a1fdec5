"""API settings: the revoked-session check fails closed unless told otherwise."""

import pytest

from bulwark.api.settings import from_env
from bulwark.common.settings import SettingsError

BASE = {"DATABASE_URL": "postgresql://x/y"}


@pytest.mark.security(stride="E", asvs=("V7.4",))
def test_revocation_check_defaults() -> None:
    settings = from_env(BASE)
    assert settings.revocation_failure_mode == "deny"
    assert settings.redis_key_prefix == "bulwark:"
    assert settings.redis_timeout == 1.0
    allow = from_env({**BASE, "REVOCATION_FAILURE_MODE": "allow"})
    assert allow.revocation_failure_mode == "allow"
    with pytest.raises(SettingsError, match="REVOCATION_FAILURE_MODE"):
        from_env({**BASE, "REVOCATION_FAILURE_MODE": "maybe"})


def test_redis_url_is_required_outside_development() -> None:
    production = {
        **BASE,
        "BULWARK_ENV": "production",
        "ISSUER": "https://auth.example",
        "JWKS_URL": "https://auth.example/.well-known/jwks.json",
    }
    with pytest.raises(SettingsError, match="REDIS_URL"):
        from_env(production)
    assert from_env({**production, "REDIS_URL": "rediss://cache:6380/0"}).redis_url


def test_rate_limiter_failure_mode_table_and_trusted_proxies() -> None:
    settings = from_env(BASE)
    assert settings.ratelimit_failure_modes == {"v1": "allow"}
    assert settings.fails_open("v1")
    assert settings.trusted_proxies == ()
    denied = from_env({**BASE, "RATELIMIT_FAILURE_MODES": "v1=deny", "TRUSTED_PROXIES": "::1"})
    assert not denied.fails_open("v1")
    assert [str(n) for n in denied.trusted_proxies] == ["::1/128"]
    with pytest.raises(SettingsError, match="unknown endpoint"):
        from_env({**BASE, "RATELIMIT_FAILURE_MODES": "login=deny"})


def test_the_longest_access_token_lifetime_is_the_auth_services_setting() -> None:
    assert from_env(BASE).access_token_ttl == 900
    assert from_env({**BASE, "ACCESS_TOKEN_TTL_SECONDS": "300"}).access_token_ttl == 300
    for bad in ("59", "3601", "soon"):
        with pytest.raises(SettingsError, match="ACCESS_TOKEN_TTL_SECONDS"):
            from_env({**BASE, "ACCESS_TOKEN_TTL_SECONDS": bad})


def test_database_pool_mode() -> None:
    assert from_env(BASE).database_pool_mode == "session"
    pooled = from_env({**BASE, "DATABASE_POOL_MODE": "transaction"})
    assert pooled.database_pool_mode == "transaction"
    with pytest.raises(SettingsError, match="DATABASE_POOL_MODE"):
        from_env({**BASE, "DATABASE_POOL_MODE": "statement"})


def test_read_replica_is_optional() -> None:
    settings = from_env(BASE)
    assert settings.database_read_url is None  # every read on the primary
    assert settings.read_your_writes_seconds == 60
    replica = from_env(
        {**BASE, "DATABASE_READ_URL": "postgresql://replica/y", "READ_YOUR_WRITES_SECONDS": "15"}
    )
    assert replica.database_read_url == "postgresql://replica/y"
    assert replica.read_your_writes_seconds == 15
    with pytest.raises(SettingsError, match="READ_YOUR_WRITES_SECONDS"):
        from_env({**BASE, "READ_YOUR_WRITES_SECONDS": "0"})


@pytest.mark.security(stride="I", asvs=("V13.3",))
@pytest.mark.parametrize("name", ["DATABASE_URL", "DATABASE_READ_URL"])
@pytest.mark.parametrize(
    "url", ["postgresql://u:Sx9Qp#Zr7k@db:5432/x", "postgresql://u:abcd/efgh@db/x", "mysql://db/x"]
)
def test_database_urls_that_do_not_parse_are_refused_without_being_repeated(
    name: str, url: str
) -> None:
    with pytest.raises(SettingsError, match=name) as refused:
        from_env({**BASE, name: url})
    assert "Sx9Qp" not in str(refused.value)
    assert "efgh" not in str(refused.value)
    assert refused.value.__cause__ is None  # no chained error quoting the URL either
    assert refused.value.__suppress_context__ or refused.value.__context__ is None


def test_a_percent_encoded_password_is_accepted() -> None:
    url = "postgresql://u:Sx9Qp%23Zr7k%2F@db:5432/x"
    assert from_env({**BASE, "DATABASE_URL": url, "DATABASE_READ_URL": url}).database_url == url


def test_write_positions_outlast_the_replica_lag_bound() -> None:
    assert from_env(BASE).replica_max_lag_seconds == 10
    assert from_env({**BASE, "REPLICA_MAX_LAG_SECONDS": "5"}).replica_max_lag_seconds == 5
    # A position dropped before the bound covers its write would let the writer miss it.
    with pytest.raises(SettingsError, match="READ_YOUR_WRITES_SECONDS"):
        from_env({**BASE, "REPLICA_MAX_LAG_SECONDS": "30", "READ_YOUR_WRITES_SECONDS": "20"})


def test_idempotency_keys_are_kept_a_day_unless_told() -> None:
    assert from_env(BASE).idempotency_key_ttl == 86400
    assert from_env({**BASE, "IDEMPOTENCY_KEY_TTL_SECONDS": "3600"}).idempotency_key_ttl == 3600
    with pytest.raises(SettingsError, match="IDEMPOTENCY_KEY_TTL_SECONDS"):
        from_env({**BASE, "IDEMPOTENCY_KEY_TTL_SECONDS": "0"})


def test_the_app_versions_are_read_at_most_every_30_seconds() -> None:
    assert from_env(BASE).app_versions_cache_seconds == 30
    assert from_env({**BASE, "APP_VERSIONS_CACHE_SECONDS": "1"}).app_versions_cache_seconds == 1
    for bad in ("0", "31", "soon"):
        with pytest.raises(SettingsError, match="APP_VERSIONS_CACHE_SECONDS"):
            from_env({**BASE, "APP_VERSIONS_CACHE_SECONDS": bad})


@pytest.mark.security(stride="T", asvs=("V13",))
def test_uploads_default_to_the_local_backend_in_development_only() -> None:
    uploads = from_env(BASE).uploads
    assert uploads.backend == "local"
    assert uploads.put_url_seconds == 900
    assert uploads.max_bytes == 10 * 1024 * 1024
    assert "image/svg+xml" not in uploads.content_types
    # The server reads a local upload's body whole (the default 1 MiB would refuse it).
    assert from_env(BASE).http.max_body_bytes > uploads.max_bytes
    production = {
        **BASE,
        "BULWARK_ENV": "production",
        "ISSUER": "https://auth.example",
        "JWKS_URL": "https://auth.example/.well-known/jwks.json",
        "REDIS_URL": "rediss://cache:6380/0",
    }
    assert from_env(production).uploads.backend == "off"
    with pytest.raises(SettingsError, match="S3_BUCKET"):
        from_env({**production, "UPLOADS_BACKEND": "s3"})
    with pytest.raises(SettingsError, match="UPLOADS_BACKEND=local"):
        from_env({**production, "UPLOADS_BACKEND": "local"})
    s3 = from_env({**production, "S3_BUCKET": "bulwark-uploads"})
    assert s3.uploads.s3 is not None
    assert s3.uploads.s3.bucket == "bulwark-uploads"
    assert s3.http.max_body_bytes == 1024 * 1024


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("UPLOADS_PUT_URL_SECONDS", "901"),
        ("UPLOADS_CONTENT_TYPES", "image/png,image/svg+xml"),
        ("UPLOADS_CONTENT_TYPES", "text/html"),
        ("UPLOADS_BACKEND", "ftp"),
        ("UPLOADS_SIGNING_KEY", "short"),
        ("UPLOADS_MAX_BYTES", "0"),
    ],
)
def test_upload_settings_refused(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        from_env({**BASE, name: value})


def test_an_account_deletion_is_taken_over_after_30_seconds_unless_told() -> None:
    assert from_env(BASE).account_deletion_claim_seconds == 30.0
    settings = from_env({**BASE, "ACCOUNT_DELETION_CLAIM_SECONDS": "2"})
    assert settings.account_deletion_claim_seconds == 2.0
    for bad in ("0", "3601", "soon"):
        with pytest.raises(SettingsError, match="ACCOUNT_DELETION_CLAIM_SECONDS"):
            from_env({**BASE, "ACCOUNT_DELETION_CLAIM_SECONDS": bad})
