"""Unit tests (no I/O beyond checking the rules file exists): settings from the environment."""

from pathlib import Path

import pytest

from bulwark.common.settings import SettingsError
from bulwark.ratelimit.settings import from_env, packaged_rules_path

REDIS = {"REDIS_URL": "redis://127.0.0.1:6379/0"}


@pytest.mark.security(stride="D", asvs=("V13",))
def test_defaults() -> None:
    settings = from_env(REDIS)
    assert (settings.host, settings.port, settings.redis_key_prefix) == ("127.0.0.1", 50051, "rl:")
    assert settings.rules_path == packaged_rules_path()
    assert settings.rules_path.is_file()
    assert settings.redis_timeout_seconds == 0.5
    assert (settings.environment, settings.log_level) == ("development", "INFO")


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, "REDIS_URL must be set"),
        ({"REDIS_URL": "http://x"}, "REDIS_URL must start"),
        ({**REDIS, "PORT": "x"}, "PORT must be an integer"),
        ({**REDIS, "PORT": "70000"}, "PORT must be at most"),
        ({**REDIS, "REDIS_TIMEOUT_SECONDS": "0"}, "REDIS_TIMEOUT_SECONDS"),
        ({**REDIS, "RATELIMIT_RULES": "/nonexistent.yaml"}, "RATELIMIT_RULES"),
        ({**REDIS, "BULWARK_ENV": "prod"}, "BULWARK_ENV"),
        ({**REDIS, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ],
)
def test_invalid_settings(environ: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        from_env(environ)


def test_rules_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text("domains: []")
    assert from_env({**REDIS, "RATELIMIT_RULES": str(path)}).rules_path == path
