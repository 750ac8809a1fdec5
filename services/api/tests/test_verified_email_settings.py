"""``REQUIRE_VERIFIED_EMAIL``: parsed into operation ids, and checked against the app's
authenticated routes when the app is built (no I/O: nothing connects before the lifespan)."""

import pytest

from bulwark.api.app import DOCUMENT_ENV, create_app
from bulwark.api.settings import ApiSettings, from_env
from bulwark.common.settings import SettingsError

BASE = {**DOCUMENT_ENV, "BULWARK_ENV": "test"}


def _settings(value: str) -> ApiSettings:
    return from_env({**BASE, "REQUIRE_VERIFIED_EMAIL": value})


def test_nothing_is_required_by_default() -> None:
    settings = from_env(BASE)
    assert settings.require_verified_email == frozenset()
    assert not settings.requires_verified_email("createNote")


def test_a_list_names_its_operations_and_star_names_all() -> None:
    listed = _settings(" createNote, createUpload ,")
    assert listed.require_verified_email == {"createNote", "createUpload"}
    assert listed.requires_verified_email("createNote")
    assert not listed.requires_verified_email("listNotes")
    assert not listed.requires_verified_email(None)
    every = _settings("*")
    assert every.requires_verified_email("listNotes")
    assert every.requires_verified_email(None)
    for settings in (listed, every, _settings("getMe,updateNote,deleteUpload")):
        assert create_app(settings) is not None  # names the app authenticates: it starts


@pytest.mark.parametrize("value", ["*,createNote", "create-note", "create note", "x" * 65])
def test_malformed_values_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="REQUIRE_VERIFIED_EMAIL"):
        _settings(value)


@pytest.mark.parametrize(
    ("value", "unknown"),
    [
        ("createNotes", "createNotes"),  # a typo must not leave createNote open
        ("createNote,getAppVersions", "getAppVersions"),  # no caller to verify
        ("getUploadObject", "getUploadObject"),  # a pre-signed URL, not a bearer token
    ],
)
def test_an_operation_the_app_does_not_authenticate_stops_the_start(
    value: str, unknown: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        create_app(_settings(value))
    message = str(refused.value)
    assert f"names no authenticated route: {unknown};" in message
    for valid in ("createNote", "listNotes", "getMe", "createUpload"):
        assert valid in message.split("the operations are ")[1]


def test_an_uploads_operation_is_unknown_when_uploads_are_off() -> None:
    off = from_env({**BASE, "UPLOADS_BACKEND": "off", "REQUIRE_VERIFIED_EMAIL": "createUpload"})
    with pytest.raises(SettingsError, match="createUpload"):
        create_app(off)
