"""``bulwark-auth keys ...``: the operator's commands over KEYS_DIR (see docs/keys.md).

    keys generate [--env E] [--alg ES256|RS256]  first key active, later ones next
    keys list                                    kids, states, times; no private parts
    keys rotate [--force] [--alg A]              next -> active, active -> retiring, new next
    keys retire                                  remove retiring keys whose tokens expired
    keys revoke KID                              remove a key at once (compromise)

The timing rules read ``JWKS_MAX_AGE_SECONDS`` and ``ACCESS_TOKEN_TTL_SECONDS`` from the
environment (the service's own values; defaults 300 and 900), or ``--jwks-max-age`` and
``--access-token-ttl``. Exit status: 0 done, 1 refused (the message says why), 2 bad setting.
"""

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TextIO

from bulwark.auth.keys.files import ALGORITHMS, StoredKey, read_keys
from bulwark.auth.keys.lifecycle import (
    KeyChange,
    KeyLifecycleError,
    KeyTiming,
    apply_change,
    iso_time,
    plan_generate,
    plan_retire,
    plan_revoke,
    plan_rotate,
)
from bulwark.common.command_line import CommandParser
from bulwark.common.settings import ENVIRONMENTS, env_environment, env_int


def add_parser(commands: "argparse._SubParsersAction[CommandParser]") -> None:
    """Add the ``keys`` command and its actions to ``bulwark-auth``'s subcommands (a
    `CommandParser`'s: a KID may begin with ``-``, as about one thumbprint in 64 does)."""
    parser = commands.add_parser("keys", help="manage signing keys (docs/keys.md)")
    actions = parser.add_subparsers(dest="action", required=True)
    common = CommandParser(add_help=False)
    common.add_argument("--dir", help="key folder (default: $KEYS_DIR, else .bulwark/keys)")
    common.add_argument("--jwks-max-age", type=int, help="seconds (default $JWKS_MAX_AGE_SECONDS)")
    common.add_argument(
        "--access-token-ttl", type=int, help="seconds (default $ACCESS_TOKEN_TTL_SECONDS)"
    )
    generate = actions.add_parser("generate", parents=[common], help="add a key")
    generate.add_argument("--env", choices=ENVIRONMENTS, help="default: $BULWARK_ENV")
    generate.add_argument("--alg", choices=ALGORITHMS, default="ES256")
    actions.add_parser("list", parents=[common], help="list the keys")
    rotate = actions.add_parser("rotate", parents=[common], help="activate the next key")
    rotate.add_argument("--force", action="store_true", help="skip the publication wait")
    rotate.add_argument("--alg", choices=ALGORITHMS, help="of the new next key")
    actions.add_parser("retire", parents=[common], help="remove expired retiring keys")
    revoke = actions.add_parser("revoke", parents=[common], help="remove a key at once")
    revoke.add_argument("kid")


def _timing(args: argparse.Namespace, environ: Mapping[str, str]) -> KeyTiming:
    return KeyTiming(
        jwks_max_age=args.jwks_max_age
        if args.jwks_max_age is not None
        else env_int(environ, "JWKS_MAX_AGE_SECONDS", 300, minimum=1),
        access_token_ttl=args.access_token_ttl
        if args.access_token_ttl is not None
        else env_int(environ, "ACCESS_TOKEN_TTL_SECONDS", 900, minimum=60),
    )


def _describe(key: StoredKey, timing: KeyTiming, now: int) -> str:
    def at(value: int | None) -> str:
        return "-" if value is None else iso_time(value)

    note = ""
    if key.state == "next":
        ready = key.published + timing.publish_wait
        note = "may activate now" if ready <= now else f"may activate from {iso_time(ready)}"
    elif key.state == "retiring" and key.retired_at is not None:
        due = key.retired_at + timing.retire_wait
        note = "may be removed now" if due <= now else f"may be removed from {iso_time(due)}"
    fields = [key.kid, key.alg, key.environment, key.state, at(key.published)]
    return "\t".join([*fields, at(key.activated_at), at(key.retired_at), note]).rstrip()


def run(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    out: TextIO | None = None,
) -> int:
    """Run ``bulwark-auth keys <action>``; returns the exit status (0, or 1 when refused).

    Raises:
        SettingsError: a timing variable is malformed, or a key file is invalid.
    """
    env = os.environ if environ is None else environ
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if out is None else out
    directory = Path(args.dir or env.get("KEYS_DIR") or ".bulwark/keys")
    timing, now = _timing(args, env), int(clock())
    stored = read_keys(directory)
    if args.action == "list":
        print("kid\talg\tenvironment\tstate\tpublished\tactivated\tretired\tnote", file=stdout)
        for key in stored:
            print(_describe(key, timing, now), file=stdout)
        return 0
    try:
        change = _plan(args, env, stored, timing, now)
    except KeyLifecycleError as refusal:
        print(f"bulwark-auth keys {args.action}: refused: {refusal}", file=stderr)
        return 1
    apply_change(directory, change)
    for message in change.messages:
        print(message, file=stdout)
    if args.action == "generate" and change.writes[0].state == "next":
        ready = iso_time(now + timing.publish_wait)
        print(f"'bulwark-auth keys rotate' may activate it from {ready}", file=stdout)
    return 0


def _plan(
    args: argparse.Namespace,
    env: Mapping[str, str],
    stored: list[StoredKey],
    timing: KeyTiming,
    now: int,
) -> KeyChange:
    if args.action == "generate":
        environment = args.env or env_environment(env)
        return plan_generate(stored, environment, alg=args.alg, now=now)
    if args.action == "rotate":
        return plan_rotate(stored, timing, now=now, force=args.force, alg=args.alg)
    if args.action == "retire":
        return plan_retire(stored, timing, now=now)
    return plan_revoke(stored, args.kid, now=now)
