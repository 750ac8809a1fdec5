"""Signing keys are bound to one environment and published without private parts."""

from pathlib import Path

import pytest

from bulwark.auth.keys import generate_key, load_signing_keys, read_keys, write_key
from bulwark.common.settings import SettingsError


def test_development_generates_a_key_on_first_run(tmp_path: Path) -> None:
    keys = load_signing_keys(tmp_path / "keys", "development", generate=True)
    assert len(read_keys(tmp_path / "keys")) == 1
    assert (tmp_path / "keys" / f"{keys.active_kid}.json").stat().st_mode & 0o077 == 0
    again = load_signing_keys(tmp_path / "keys", "development", generate=True)
    assert again.active_kid == keys.active_kid


def test_production_never_generates_keys(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no signing keys"):
        load_signing_keys(tmp_path, "production", generate=False)


def test_a_key_of_another_environment_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path, generate_key("staging"))
    with pytest.raises(SettingsError, match="another environment"):
        load_signing_keys(tmp_path, "production", generate=False)


def test_the_jwks_has_public_parts_only(tmp_path: Path) -> None:
    keys = load_signing_keys(tmp_path, "test", generate=True)
    (published,) = keys.jwks()["keys"]
    assert published["kid"] == keys.active_kid
    assert published["alg"] == "ES256"
    assert "d" not in published
