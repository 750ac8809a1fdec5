"""``bulwark-auth keys ...`` against a real folder, with an injected clock."""

import io
import json
from pathlib import Path

import msgspec
import pytest

from bulwark.auth.cli import main
from bulwark.auth.keys import read_keys
from bulwark.auth.keys.commands import add_parser, run
from bulwark.auth.keys.files import StoredKey, generate_key, write_key
from bulwark.common.command_line import CommandParser

pytestmark = pytest.mark.security(stride="S", asvs=("V11",))

T0 = 1_800_000_000
ENV = {"BULWARK_ENV": "production", "JWKS_MAX_AGE_SECONDS": "60", "ACCESS_TOKEN_TTL_SECONDS": "300"}
PUBLISH_WAIT = 1 + 60 + 1
RETIRE_WAIT = 1 + 300 + 60 + 60 + 1


def keys_cli(directory: Path, *argv: str, now: int) -> tuple[int, str]:
    """Run ``bulwark-auth keys <argv> --dir directory`` at ``now``; (status, output)."""
    parser = CommandParser()  # as bulwark-auth's: a kid may begin with "-"
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["keys", *argv, "--dir", str(directory)])
    out = io.StringIO()
    status = run(args, environ=ENV, clock=lambda: now, out=out)
    return status, out.getvalue()


def states(directory: Path) -> dict[str, str]:
    return {key.kid: key.state for key in read_keys(directory)}


def key_whose_kid_begins_with(prefix: str, *, now: int) -> StoredKey:
    """An active ES256 key whose kid (its RFC 7638 thumbprint, base64url) begins with
    ``prefix``: one key in 64 has a kid that begins with "-", one in 4096 with "--"."""
    for _ in range(200_000):
        key = generate_key("production", now=now)
        if key.kid.startswith(prefix):
            return key
    raise AssertionError(f"no kid beginning with {prefix!r}")  # odds: below 1e-20


def test_a_full_life_cycle(tmp_path: Path) -> None:
    assert keys_cli(tmp_path, "generate", now=T0)[0] == 0
    (first,) = states(tmp_path)
    status, output = keys_cli(tmp_path, "generate", "--alg", "RS256", now=T0 + 10)
    assert status == 0
    assert "may activate it from" in output
    (second,) = set(states(tmp_path)) - {first}

    status, output = keys_cli(tmp_path, "rotate", now=T0 + 10 + PUBLISH_WAIT - 1)
    assert status == 1
    assert "--force" in output
    assert states(tmp_path) == {first: "active", second: "next"}

    rotated_at = T0 + 10 + PUBLISH_WAIT
    assert keys_cli(tmp_path, "rotate", now=rotated_at)[0] == 0
    after = states(tmp_path)
    (third,) = set(after) - {first, second}
    assert after == {first: "retiring", second: "active", third: "next"}
    assert next(k for k in read_keys(tmp_path) if k.kid == third).alg == "RS256"

    status, output = keys_cli(tmp_path, "list", now=rotated_at)
    assert status == 0
    assert "may be removed from" in output
    assert '"d"' not in output

    assert keys_cli(tmp_path, "retire", now=rotated_at + RETIRE_WAIT - 1)[0] == 0
    assert first in states(tmp_path)
    assert keys_cli(tmp_path, "retire", now=rotated_at + RETIRE_WAIT)[0] == 0
    assert states(tmp_path) == {second: "active", third: "next"}
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in tmp_path.iterdir())


def test_force_rotates_at_once(tmp_path: Path) -> None:
    keys_cli(tmp_path, "generate", now=T0)
    keys_cli(tmp_path, "generate", now=T0)
    assert keys_cli(tmp_path, "rotate", "--force", now=T0)[0] == 0
    assert sorted(states(tmp_path).values()) == ["active", "next", "retiring"]


def test_revoke_removes_the_key_file_at_once(tmp_path: Path) -> None:
    keys_cli(tmp_path, "generate", now=T0)
    (active,) = states(tmp_path)
    status, output = keys_cli(tmp_path, "revoke", active, now=T0 + 1)
    assert status == 0
    assert "generated and activated" in output
    assert not (tmp_path / f"{active}.json").exists()
    assert list(states(tmp_path).values()) == ["active"]
    assert keys_cli(tmp_path, "revoke", active, now=T0 + 2)[0] == 1


@pytest.mark.parametrize("prefix", ["-", "--"])
def test_revoke_takes_a_kid_that_begins_with_a_dash(tmp_path: Path, prefix: str) -> None:
    """The key-compromise procedure, whatever the kid: ``keys revoke -AbC…``."""
    compromised = key_whose_kid_begins_with(prefix, now=T0)
    write_key(tmp_path, compromised)
    status, output = keys_cli(tmp_path, "revoke", compromised.kid, now=T0 + 1)
    assert status == 0, output
    assert compromised.kid not in states(tmp_path)
    assert list(states(tmp_path).values()) == ["active"]  # its successor


def test_the_entry_point_revokes_a_kid_that_begins_with_a_dash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    active = key_whose_kid_begins_with("-", now=T0)
    upcoming = msgspec.structs.replace(
        key_whose_kid_begins_with("-", now=T0), state="next", activated_at=None
    )
    write_key(tmp_path, active)
    write_key(tmp_path, upcoming)
    assert main(["keys", "revoke", active.kid, "--dir", str(tmp_path)]) == 0
    assert states(tmp_path) == {upcoming.kid: "active"}
    assert main(["keys", "revoke", "--dir", str(tmp_path), "--", upcoming.kid]) == 0
    assert upcoming.kid not in states(tmp_path)
    assert f"revoked {active.kid}" in capsys.readouterr().out


def test_generate_binds_the_key_to_the_environment(tmp_path: Path) -> None:
    keys_cli(tmp_path, "generate", "--env", "staging", now=T0)
    (key,) = read_keys(tmp_path)
    assert key.environment == "staging"
    status, output = keys_cli(tmp_path, "generate", now=T0)  # BULWARK_ENV=production
    assert status == 1
    assert "not production" in output


def test_the_command_line_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KEYS_DIR", str(tmp_path))
    monkeypatch.setenv("BULWARK_ENV", "test")
    assert main(["keys", "generate", "--alg", "RS256"]) == 0
    assert main(["keys", "list"]) == 0
    assert "RS256\ttest\tactive" in capsys.readouterr().out
    (path,) = tmp_path.glob("*.json")
    path.write_text(json.dumps({"kid": path.stem}))
    assert main(["keys", "list"]) == 2  # an invalid key file is a configuration error
