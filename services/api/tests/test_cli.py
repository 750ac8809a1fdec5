"""``bulwark-api flags ...``: the command line reaches the command with its data intact,
whatever the data begins with (the command itself is tested in libs/common)."""

import argparse

import pytest

from bulwark.api.cli import main
from bulwark.common import flag_commands


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The arguments each ``flags`` command was run with (none touches a database)."""
    runs: list[argparse.Namespace] = []

    def run(args: argparse.Namespace, *, program: str) -> int:
        assert program == "bulwark-api"
        runs.append(args)
        return 0

    monkeypatch.setattr(flag_commands, "run", run)
    return runs


def test_flag_filters_and_notes_may_begin_with_a_dash(commands: list[argparse.Namespace]) -> None:
    assert main(["flags", "list", "--kind", "-burst", "--json"]) == 0
    assert main(["flags", "review", "12", "--note", "-a@example.com"]) == 0
    assert main(["flags", "review", "--note", "--json", "--", "13"]) == 0
    assert [(a.kind, a.json) for a in commands[:1]] == [("-burst", True)]
    assert [(a.id, a.note) for a in commands[1:]] == [(12, "-a@example.com"), (13, "--json")]
