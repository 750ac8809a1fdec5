"""`CommandParser`: an ``argparse`` parser whose data arguments may begin with ``-``.

argparse takes any argument that begins with ``-`` for an option. A key id (an RFC 7638
thumbprint in base64url: about one in 64 begins with ``-``), a user id, an email, a kind or a
note that begins with ``-`` is then refused (``the following arguments are required: kid``,
``argument --user: expected one argument``); for ``keys revoke`` that is the key-compromise
procedure failing during the incident. Before argparse reads its own level of the command
line, a `CommandParser` rewrites it into forms whose meaning argparse documents, whatever the
Python version:

- An option that takes a value takes the next argument, whatever it begins with, as POSIX
  ``getopt`` does: ``--user -x`` is passed on as ``--user=-x`` (``-u -x`` as ``-u=-x``). The
  exception is ``--``, which always ends the options: ``--user --`` is an option without its
  value (on Python 3.11 argparse would drop ``--`` from ``--user=--`` anyway). A one-letter
  option's value is the next argument, never attached (``-ux`` is an operand).
- In a command without subcommands, an argument that is none of the command's options is an
  operand, whatever it begins with; the operands are passed on, in order, after ``--``:
  ``revoke -AbC --dir D`` is read as ``revoke --dir=D -- -AbC``.
- ``--`` ends the options as usual; everything after it is an operand, ``--`` included.
- In a command with subcommands, everything from the subcommand on is left to the
  subcommand's own parser (a `CommandParser` too: `add_subparsers` makes them so).
- The options keep their meaning (``-h``, ``--help``, ``--dir D``, ``--dir=D``); an option
  is recognised only when written in full (``allow_abbrev=False``), so a value that happens
  to begin like an option name (a kid ``--di…``) is never taken for it.

Only public argparse API is used: ``add_argument`` (its returned `argparse.Action`'s
``option_strings`` and ``nargs``), ``add_subparsers``, ``parents`` and ``parse_known_args``.
Options are known when added with ``add_argument`` on the parser or a `CommandParser` parent;
argument groups are not supported (they refuse once the parser is built), nor is
``parse_intermixed_args`` (it bypasses ``parse_known_args``). Checked against the argparse of
Python 3.11, 3.12.0, 3.12.6, 3.13.5 and 3.14.7 (``libs/common/tests/test_command_line.py``).
"""

import argparse
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, overload

_N = TypeVar("_N")


class CommandParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose operands and option values may begin with ``-``
    (see the module's docstring). Build subcommands with `add_subparsers` as usual.

    Raises (while it is built, never while parsing):
        TypeError: a parent is not a `CommandParser`, or an argument group is added.
        ValueError: an option takes a variable number of values (``nargs`` ``?``, ``*``,
            ``+``), which has no unambiguous reading when values may begin with ``-``.
    """

    def __init__(self, *, allow_abbrev: bool = False, **kwargs: Any) -> None:
        """As `argparse.ArgumentParser` (keyword arguments only); ``allow_abbrev`` is off."""
        self._takes_value: dict[str, bool] = {}  # option string -> takes one value
        self._has_commands = False
        self._built = False
        parents = kwargs.get("parents", ())
        for parent in parents:
            if not isinstance(parent, CommandParser):
                raise TypeError("the parents of a CommandParser must be CommandParsers")
        super().__init__(allow_abbrev=allow_abbrev, **kwargs)
        for parent in parents:
            self._takes_value.update(parent._takes_value)
        self._built = True

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action:
        """As `argparse.ArgumentParser.add_argument`; the option strings are remembered."""
        action = super().add_argument(*name_or_flags, **kwargs)
        if action.nargs not in (None, 0, 1, argparse.SUPPRESS) and action.option_strings:
            raise ValueError(f"{action.option_strings[0]}: nargs={action.nargs!r} is not supported")
        for option in action.option_strings:
            self._takes_value[option] = action.nargs in (None, 1)
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        """Refused once built (argparse's own two groups are made while it is built): the
        group's options would not be known here."""
        if self._built:
            raise TypeError("CommandParser does not support argument groups")
        return super().add_argument_group(*args, **kwargs)

    def add_mutually_exclusive_group(self, **kwargs: Any) -> Any:
        """Refused: the group's options would not be known here."""
        raise TypeError("CommandParser does not support argument groups")

    def add_subparsers(self, **kwargs: Any) -> Any:
        """As `argparse.ArgumentParser.add_subparsers`; the subcommands are `CommandParser`s
        unless ``parser_class`` says otherwise."""
        self._has_commands = True
        kwargs.setdefault("parser_class", type(self))
        return super().add_subparsers(**kwargs)

    @overload  # the same overloads as argparse's
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @overload
    def parse_known_args(
        self, args: Iterable[str] | None, namespace: _N
    ) -> tuple[_N, list[str]]: ...
    @overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """As `argparse.ArgumentParser.parse_known_args`, on the rewritten arguments
        (``sys.argv[1:]`` when ``args`` is None)."""
        rewritten = rewrite_arguments(
            sys.argv[1:] if args is None else list(args),
            self._takes_value,
            commands=self._has_commands,
        )
        return super().parse_known_args(rewritten, namespace)


def rewrite_arguments(
    args: Sequence[str], takes_value: Mapping[str, bool], *, commands: bool
) -> list[str]:
    """One level of a command line in forms argparse cannot misread (see the module).

    ``takes_value`` maps each option string of the level to whether it takes one value;
    ``commands``: the level has subcommands (everything from the first argument that is not
    an option on is left as it is).
    """
    out: list[str] = []
    operands: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        index += 1
        if arg == "--":
            if commands:
                return [*out, arg, *args[index:]]
            operands += args[index:]
            break
        name = arg.partition("=")[0] if arg.startswith("--") else arg
        if name not in takes_value:
            if commands:
                return [*out, *args[index - 1 :]]
            operands.append(arg)
        elif arg == name and takes_value[arg] and index < len(args) and args[index] != "--":
            value = args[index]
            index += 1
            out.append(f"{arg}={value}")
        else:
            out.append(arg)
    return [*out, "--", *operands] if operands else out
