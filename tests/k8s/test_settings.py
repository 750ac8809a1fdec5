"""The environment each overlay gives the three services is one they start with: their own
``from_env`` accepts it (a missing required setting, such as production's SMTP_URL, would
stop the pods at start-up), with stand-ins for the operator's Secrets."""

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from bulwark.api.settings import from_env as api_settings
from bulwark.auth.settings import from_env as auth_settings
from bulwark.common.settings import SettingsError
from bulwark.ratelimit.settings import from_env as ratelimit_settings

from . import policies
from .conftest import K8S, OVERLAYS

Objects = list[dict[str, Any]]

#: Each image's settings parser.
SERVICES: dict[str, Callable[[Mapping[str, str]], object]] = {
    "bulwark-auth": auth_settings,
    "bulwark-api": api_settings,
    "bulwark-ratelimit": ratelimit_settings,
}

#: Stand-ins for the keys of the Secrets deploy/k8s/README.md has the operator create.
SECRET_VALUES = {
    "DATABASE_URL": "postgresql://bulwark:pw@pgbouncer.example.internal:6432/bulwark",
    "DATABASE_READ_URL": "postgresql://bulwark:pw@replica.example.internal:5432/bulwark",
    "REDIS_URL": "rediss://:pw@redis.example.internal:6379/0",
    "EMAIL_FINGERPRINT_KEY": "k" * 64,
    "SMTP_USERNAME": "bulwark",
    "SMTP_PASSWORD": "smtp-password",
}
#: Files the pods read from ConfigMap volumes, by the variable naming them: this checkout's
#: copy (the rate limiter's settings check that its rules file exists).
MOUNTED_FILES = {"RATELIMIT_RULES": K8S / "base" / "rules.yaml"}


def environment(objects: Objects, image: str, *, optional: bool = True) -> dict[str, str]:
    """The variables the Deployment of ``image`` gets: its ConfigMaps' and its own values,
    the Secret keys it names (optional ones only when ``optional``); the files of
    `MOUNTED_FILES` are this checkout's."""
    _, _, container = next(
        (obj, spec, c)
        for obj, spec, c in policies.containers(objects)
        if obj["kind"] == "Deployment" and c["image"].split(":")[0].endswith(image)
    )
    env = policies.config_values(objects, container)
    for item in container.get("env", []):
        ref = item.get("valueFrom", {}).get("secretKeyRef")
        if ref is not None and (optional or not ref.get("optional", False)):
            env[item["name"]] = SECRET_VALUES[ref["key"]]
    env.update({name: str(path) for name, path in MOUNTED_FILES.items() if name in env})
    return env


@pytest.mark.parametrize("image", SERVICES)
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_starts_with_what_the_overlay_gives_it(
    rendered: dict[str, Objects], overlay: str, image: str
) -> None:
    for optional in (True, False):
        SERVICES[image](environment(rendered[overlay], image, optional=optional))


def test_auth_sends_mail_over_tls_in_staging_and_production_and_not_in_development(
    rendered: dict[str, Objects],
) -> None:
    production = auth_settings(environment(rendered["production"], "bulwark-auth"))
    assert production.smtp is not None
    assert (production.smtp.security, production.smtp.port) == ("tls", 465)
    assert production.smtp.sender.endswith("@bulwark.example.com>")
    assert (production.smtp.username, production.smtp.password) == ("bulwark", "smtp-password")
    staging = auth_settings(environment(rendered["staging"], "bulwark-auth", optional=False))
    assert staging.smtp is not None
    assert (staging.smtp.security, staging.smtp.port) == ("starttls", 587)
    assert (staging.smtp.username, staging.smtp.password) == (None, None)
    # Development sets no server: its mail waits in the outbox.
    assert auth_settings(environment(rendered["development"], "bulwark-auth")).smtp is None
    for overlay in OVERLAYS:
        settings = auth_settings(environment(rendered[overlay], "bulwark-auth"))
        assert settings.breach_check == "off"
        assert settings.account_links_url == f"{settings.issuer}/account"


def test_production_without_an_smtp_server_is_refused(rendered: dict[str, Objects]) -> None:
    objects = copy.deepcopy(rendered["production"])
    config = next(
        o["data"] for o in objects if o["kind"] == "ConfigMap" and "SMTP_URL" in o.get("data", {})
    )
    del config["SMTP_URL"]
    with pytest.raises(SettingsError, match="SMTP_URL must be set"):
        auth_settings(environment(objects, "bulwark-auth"))
