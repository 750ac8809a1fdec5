"""Signing keys are bound to one environment, fit their algorithm (ES256 on P-256, RS256 of
2048+ bits), are written atomically (0600) and published without private parts."""

from pathlib import Path

import msgspec
import pytest
from joserfc.jwk import ECKey, RSAKey

from bulwark.auth.keys import (
    SigningKeys,
    generate_key,
    load_signing_keys,
    read_keys,
    write_key,
)
from bulwark.auth.keys.files import KeyState, import_private_key
from bulwark.common.settings import SettingsError

pytestmark = pytest.mark.security(stride="S", asvs=("V11.6", "V9.1"))


def test_development_generates_a_key_on_first_run(tmp_path: Path) -> None:
    keys = load_signing_keys(tmp_path / "keys", "development", generate=True)
    assert len(read_keys(tmp_path / "keys")) == 1
    assert (tmp_path / "keys" / f"{keys.active_kid}.json").stat().st_mode & 0o077 == 0
    again = load_signing_keys(tmp_path / "keys", "development", generate=True)
    assert again.active_kid == keys.active_kid


def test_production_never_generates_keys(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no signing keys"):
        load_signing_keys(tmp_path, "production", generate=False)


@pytest.mark.security(stride="S", asvs=("V9.2",))
def test_a_key_of_another_environment_is_refused(tmp_path: Path) -> None:
    write_key(tmp_path, generate_key("staging"))
    with pytest.raises(SettingsError, match="another environment"):
        load_signing_keys(tmp_path, "production", generate=False)


@pytest.mark.security(stride="I", asvs=("V11.6",))
def test_the_jwks_has_public_parts_only(tmp_path: Path) -> None:
    keys = load_signing_keys(tmp_path, "test", generate=True)
    (published,) = keys.jwks()["keys"]
    assert published["kid"] == keys.active_kid
    assert published["alg"] == "ES256"
    assert "d" not in published


def test_rs256_keys_sign_with_their_own_alg_and_publish_n_and_e(tmp_path: Path) -> None:
    write_key(tmp_path, generate_key("test", alg="RS256"))
    keys = load_signing_keys(tmp_path, "test", generate=False)
    kid, alg, private = keys.signer()
    assert (kid, alg) == (keys.active_kid, "RS256")
    assert private.raw_value.key_size >= 2048
    (published,) = keys.jwks()["keys"]
    assert published["kty"] == "RSA"
    assert published["alg"] == "RS256"
    assert {"n", "e"} <= published.keys()
    assert not {"d", "p", "q", "dp", "dq", "qi"} & published.keys()


@pytest.mark.filterwarnings("ignore:Key size should be")  # the weak key is the point
def test_short_rsa_keys_and_wrong_curves_are_refused(tmp_path: Path) -> None:
    weak = RSAKey.generate_key(1024, parameters={"alg": "RS256"}, auto_kid=True)
    stored = msgspec.structs.replace(
        generate_key("test", alg="RS256"),
        kid=str(weak.kid),
        private_jwk=dict(weak.as_dict(private=True)),
    )
    write_key(tmp_path, stored)
    with pytest.raises(SettingsError, match="2048"):
        load_signing_keys(tmp_path, "test", generate=False)
    p384 = ECKey.generate_key("P-384", auto_kid=True)
    with pytest.raises(SettingsError, match="P-256"):
        import_private_key(
            msgspec.structs.replace(stored, alg="ES256", private_jwk=dict(p384.as_dict()))
        )


def test_a_public_only_jwk_cannot_be_a_signing_key() -> None:
    stored = generate_key("test")
    public = ECKey.import_key(stored.private_jwk).as_dict(private=False)
    with pytest.raises(SettingsError, match="private part"):
        import_private_key(msgspec.structs.replace(stored, private_jwk=dict(public)))


@pytest.mark.security(stride="I", asvs=("V13.3",))
def test_key_files_are_replaced_atomically_with_owner_only_mode(tmp_path: Path) -> None:
    key = generate_key("test", state="next")
    path = write_key(tmp_path, key)
    write_key(tmp_path, msgspec.structs.replace(key, state="active", activated_at=1))
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    (read,) = read_keys(tmp_path)
    assert read.state == "active"


def test_a_file_must_be_named_after_its_kid(tmp_path: Path) -> None:
    path = write_key(tmp_path, generate_key("test"))
    path.rename(tmp_path / "other.json")
    with pytest.raises(SettingsError, match=r"<kid>\.json"):
        read_keys(tmp_path)


def test_key_files_of_earlier_versions_still_load(tmp_path: Path) -> None:
    key = generate_key("test", now=1_700_000_000)
    legacy = {
        "kid": key.kid,
        "alg": "ES256",
        "environment": "test",
        "state": "active",
        "created_at": 1_700_000_000,
        "private_jwk": key.private_jwk,
    }
    (tmp_path / f"{key.kid}.json").write_bytes(msgspec.json.encode(legacy))
    (read,) = read_keys(tmp_path)
    assert read.published == 1_700_000_000
    assert load_signing_keys(tmp_path, "test", generate=False).active_kid == key.kid


def test_every_state_is_published_and_only_the_active_key_signs(tmp_path: Path) -> None:
    states: list[KeyState] = ["retiring", "active", "next"]
    stored = [generate_key("test", state=state) for state in states]
    keys = SigningKeys(stored, "test")
    assert keys.active_kid == stored[1].kid
    assert sorted(k["kid"] for k in keys.jwks()["keys"]) == sorted(k.kid for k in stored)
    assert all(keys.public_key(k.kid) is not None for k in stored)
    assert keys.public_key("unknown") is None
