"""``bulwark-auth flags ...``: the command line reaches the command with its data intact,
whatever the data begins with (``keys``: test_keys_commands.py; ``flags``: libs/common)."""

import argparse
import uuid

import pytest

from bulwark.auth.cli import main
from bulwark.common import flag_commands


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The arguments each ``flags`` command was run with (none touches a database)."""
    runs: list[argparse.Namespace] = []

    def run(args: argparse.Namespace, *, program: str) -> int:
        assert program == "bulwark-auth"
        runs.append(args)
        return 0

    monkeypatch.setattr(flag_commands, "run", run)
    return runs


def test_flag_filters_and_notes_may_begin_with_a_dash(commands: list[argparse.Namespace]) -> None:
    user = uuid.uuid4()
    assert main(["flags", "list", "--kind", "-h", "--user", str(user)]) == 0
    assert main(["flags", "review", "--note", "-QA", "7"]) == 0
    assert [(a.kind, a.user) for a in commands[:1]] == [("-h", user)]
    assert [(a.id, a.note) for a in commands[1:]] == [(7, "-QA")]


def test_help_is_still_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "revoke", "--help"])
    assert exited.value.code == 0
    assert "usage: bulwark-auth keys revoke" in capsys.readouterr().out
