"""``bulwark-api flags ...``: the command line reaches the command with its data intact,
whatever the data begins with (the command itself is tested in libs/common)."""

import argparse

import pytest

from bulwark.api.app_versions import commands as app_version_commands
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


@pytest.mark.parametrize(
    "version",
    [
        "01.2.3",
        "1.2",
        "1..3",
        " 1.2.3",
        "1.2.3 ",
        "+1.2.3",
        "-1.2.3",
        "v1.2.3",
        "1.2.3-01",
        "1" * 65,
    ],
)
def test_app_versions_set_refuses_what_is_not_a_version(
    version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["app-versions", "set", "ios", version])
    assert exited.value.code == 2
    assert "argument version:" in capsys.readouterr().err


def test_app_versions_set_takes_a_platform_and_a_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs: list[argparse.Namespace] = []
    monkeypatch.setattr(app_version_commands, "run", lambda args: runs.append(args) or 0)
    assert main(["app-versions", "set", "android", "3.10.0-rc.1+build.5"]) == 0
    assert (runs[0].action, runs[0].platform, runs[0].version) == (
        "set",
        "android",
        "3.10.0-rc.1+build.5",
    )
    with pytest.raises(SystemExit):
        main(["app-versions", "set", "web", "1.0.0"])
