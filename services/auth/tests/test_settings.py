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


def test_production_requires_an_https_issuer_and_a_key_folder() -> None:
    base = {"BULWARK_ENV": "production", "DATABASE_URL": "postgresql://x/y"}
    with pytest.raises(SettingsError, match="ISSUER"):
        from_env(base)
    with pytest.raises(SettingsError, match="https"):
        from_env({**base, "ISSUER": "http://auth.example", "KEYS_DIR": "/k"})
    with pytest.raises(SettingsError, match="KEYS_DIR"):
        from_env({**base, "ISSUER": "https://auth.example"})


def test_weaker_argon2_parameters_are_refused() -> None:
    with pytest.raises(SettingsError, match="ARGON2_MEMORY_KIB"):
        from_env({"DATABASE_URL": "postgresql://x/y", "ARGON2_MEMORY_KIB": "1024"})
