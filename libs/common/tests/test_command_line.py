"""`CommandParser`: operands and option values that begin with ``-`` are data, whatever
argparse would make of them; real options, ``--help`` and ``--`` keep their meaning."""

import argparse

import pytest

from bulwark.common.command_line import CommandParser, rewrite_arguments

pytestmark = pytest.mark.security(stride="T", asvs=("V1.2",))


def tool() -> CommandParser:
    """A command shaped like ``bulwark-auth``: ``keys revoke KID`` with options from a
    parent, ``flags list`` with options only, ``flags review ID``."""
    parser = CommandParser(prog="tool")
    commands = parser.add_subparsers(dest="command")
    keys = commands.add_parser("keys").add_subparsers(dest="action", required=True)
    common = CommandParser(add_help=False)
    common.add_argument("--dir")
    revoke = keys.add_parser("revoke", parents=[common])
    revoke.add_argument("kid")
    revoke.add_argument("--force", action="store_true")
    flags = commands.add_parser("flags").add_subparsers(dest="action", required=True)
    listing = flags.add_parser("list")
    listing.add_argument("--user")
    listing.add_argument("--kind")
    listing.add_argument("-n", "--limit", type=int, default=100)
    listing.add_argument("--json", action="store_true")
    review = flags.add_parser("review")
    review.add_argument("id", type=int)
    review.add_argument("--note")
    return parser


@pytest.mark.parametrize(
    ("argv", "kid"),
    [
        (["keys", "revoke", "-AbC"], "-AbC"),
        (["keys", "revoke", "--AbC"], "--AbC"),
        (["keys", "revoke", "-hAbC"], "-hAbC"),  # begins like -h, is not -h
        (["keys", "revoke", "--di"], "--di"),  # begins like --dir: no abbreviations
        (["keys", "revoke", "-"], "-"),
        (["keys", "revoke", "-AbC", "--dir", "d"], "-AbC"),
        (["keys", "revoke", "--dir", "d", "-AbC"], "-AbC"),
        (["keys", "revoke", "--dir=d", "-AbC", "--force"], "-AbC"),
        (["keys", "revoke", "--", "-AbC"], "-AbC"),  # the standard separator still works
        (["keys", "revoke", "--dir", "d", "--", "-AbC"], "-AbC"),
        (["keys", "revoke", "--", "--dir"], "--dir"),
        (["keys", "revoke", "--", "-h"], "-h"),
        (["keys", "revoke", "--", "--"], "--"),
        (["keys", "revoke", "_AbC"], "_AbC"),
    ],
)
def test_an_operand_may_begin_with_a_dash(argv: list[str], kid: str) -> None:
    args = tool().parse_args(argv)
    assert args.kid == kid
    assert args.dir in (None, "d")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["flags", "list", "--user", "-x"], {"user": "-x"}),
        (["flags", "list", "--kind", "--burst", "--json"], {"kind": "--burst", "json": True}),
        (["flags", "list", "--kind", "-h"], {"kind": "-h"}),  # a value, as for getopt
        (["flags", "list", "--kind", "--json"], {"kind": "--json", "json": False}),
        (["flags", "list", "--kind", ""], {"kind": ""}),
        (["flags", "list", "--kind=-x"], {"kind": "-x"}),
        (["flags", "list", "--limit", "-5"], {"limit": -5}),
        (["flags", "list", "-n", "-5"], {"limit": -5}),
        (["flags", "list", "--user", "a@b", "--kind", "k"], {"user": "a@b", "kind": "k"}),
        (["flags", "review", "7", "--note", "-a@example.com"], {"id": 7, "note": "-a@example.com"}),
        (["flags", "review", "-7"], {"id": -7}),
    ],
)
def test_an_option_takes_the_next_argument_whatever_it_begins_with(
    argv: list[str], expected: dict[str, object]
) -> None:
    args = tool().parse_args(argv)
    assert {name: getattr(args, name) for name in expected} == expected


def test_the_options_and_help_keep_their_meaning(capsys: pytest.CaptureFixture[str]) -> None:
    args = tool().parse_args(["keys", "revoke", "--force", "K", "--dir", "d"])
    assert (args.kid, args.force, args.dir) == ("K", True, "d")
    for argv in (["--help"], ["keys", "-h"], ["keys", "revoke", "-AbC", "--help"]):
        with pytest.raises(SystemExit) as exited:
            tool().parse_args(argv)
        assert exited.value.code == 0
        assert capsys.readouterr().out.startswith("usage: tool")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "revoke"], "the following arguments are required: kid"),
        (["keys", "revoke", "--dir"], "argument --dir: expected one argument"),
        (["keys", "revoke", "--dir", "--", "K"], "argument --dir: expected one argument"),
        (["keys", "revoke", "K", "-L"], "unrecognized arguments: -L"),
        (["flags", "review", "-x"], "argument id: invalid int value: '-x'"),
        (["keys", "rotate"], "invalid choice: 'rotate'"),
    ],
)
def test_what_is_missing_or_extra_is_still_reported(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        tool().parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_one_level_is_rewritten_at_a_time() -> None:
    options = {"-h": False, "--help": False, "--dir": True, "--force": False}
    assert rewrite_arguments(["revoke", "-AbC"], options, commands=True) == ["revoke", "-AbC"]
    assert rewrite_arguments(["--dir", "-d", "-AbC", "--force"], options, commands=False) == [
        "--dir=-d",
        "--force",
        "--",
        "-AbC",
    ]
    assert rewrite_arguments(["--force"], options, commands=False) == ["--force"]


def test_unsupported_shapes_are_refused_when_built() -> None:
    parser = CommandParser()
    with pytest.raises(ValueError, match="nargs"):
        parser.add_argument("--many", nargs="*")
    with pytest.raises(TypeError):
        parser.add_argument_group("group")
    with pytest.raises(TypeError):
        parser.add_mutually_exclusive_group()
    with pytest.raises(TypeError):
        CommandParser(parents=[argparse.ArgumentParser(add_help=False)])
