"""The environment docker-compose.yml gives the auth service, with the values of an .env made
from .env.example, is one it starts with: its mail settings pass through from .env, are
optional in staging (mail waits in the outbox) and reach no other container.

Compose's own interpolation is reproduced here (``${VAR}``, ``${VAR:-default}``,
``${VAR:?message}``); `make test-containers` runs the file with docker-compose itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from bulwark.auth.settings import from_env as auth_settings
from bulwark.common.settings import SettingsError

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
MAIL = ("SMTP_URL", "MAIL_FROM", "SMTP_USERNAME", "SMTP_PASSWORD")

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, values: Mapping[str, str]) -> str:
    """``text`` with compose's ``${NAME}``, ``${NAME:-default}`` and ``${NAME:?message}``
    replaced from ``values``. Raises KeyError(message) for a required one that is empty."""

    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        given = values.get(name, "")
        if operator in (":?", "?") and not given:
            raise KeyError(argument)
        return given or (argument if operator in (":-", "-") else "")

    return _VARIABLE.sub(value, text)


def dotenv(**changes: str) -> dict[str, str]:
    """The values of .env.example, its five secrets filled in, then ``changes``."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    for secret in ("POSTGRES_PASSWORD", "AUTH_DB_PASSWORD", "API_DB_PASSWORD", "REDIS_PASSWORD"):
        values[secret] = "0123456789abcdef" * 4
    values["EMAIL_FINGERPRINT_KEY"] = "fedcba9876543210" * 4
    return values | changes


def _interpolated(node: Any, values: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, values)
    if isinstance(node, dict):
        return {key: _interpolated(item, values) for key, item in node.items()}
    if isinstance(node, list):
        return [_interpolated(item, values) for item in node]
    return node


def services(values: Mapping[str, str]) -> dict[str, Any]:
    """docker-compose.yml's services, their strings interpolated with ``values`` (after
    parsing, as compose does: ``${X:-}`` is an empty string, not null)."""
    found: dict[str, Any] = _interpolated(yaml.safe_load(COMPOSE.read_text()), values)["services"]
    return found


def auth_environment(values: Mapping[str, str]) -> dict[str, str]:
    """The variables of the auth container."""
    environment = services(values)["auth"]["environment"]
    assert all(isinstance(v, str) for v in environment.values()), environment
    return dict(environment)


def test_env_example_names_the_mail_settings_empty() -> None:
    values = dotenv()
    assert {name: values.get(name) for name in MAIL} == dict.fromkeys(MAIL, "")


def test_staging_without_an_smtp_server_starts_and_keeps_mail_in_the_outbox() -> None:
    env = auth_environment(dotenv())
    assert env["BULWARK_ENV"] == "staging"
    assert auth_settings(env).smtp is None


def test_the_smtp_server_and_its_credentials_reach_auth_only() -> None:
    values = dotenv(
        SMTP_URL="smtp+starttls://smtp.example.com:587",
        MAIL_FROM="Bulwark <no-reply@example.com>",
        SMTP_USERNAME="bulwark",
        SMTP_PASSWORD="smtp-secret",
    )
    smtp = auth_settings(auth_environment(values)).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.security) == ("smtp.example.com", 587, "starttls")
    assert (smtp.sender, smtp.username, smtp.password) == (
        "Bulwark <no-reply@example.com>",
        "bulwark",
        "smtp-secret",
    )
    # Not the migration job, the API or the rate limiter: they send no mail.
    for name, service in services(values).items():
        if name != "auth":
            assert not set(MAIL) & set(service.get("environment") or {}), name


def test_production_refuses_to_start_without_an_smtp_server() -> None:
    env = auth_environment(dotenv(BULWARK_ENV="production"))
    with pytest.raises(SettingsError, match="SMTP_URL must be set"):
        auth_settings(env)
    env = auth_environment(
        dotenv(BULWARK_ENV="production", SMTP_URL="smtps://smtp.example.com", MAIL_FROM="a@b.c")
    )
    smtp = auth_settings(env).smtp
    assert smtp is not None
    assert (smtp.port, smtp.security) == (465, "tls")
    # Plain SMTP is for development only.
    env = auth_environment(dotenv(SMTP_URL="smtp://smtp.example.com", MAIL_FROM="a@b.c"))
    with pytest.raises(SettingsError, match="must use TLS"):
        auth_settings(env)
