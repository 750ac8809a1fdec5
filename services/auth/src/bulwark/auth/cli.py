"""``bulwark-auth``: run the service, apply migrations, manage signing keys.

bulwark-auth serve                   run the HTTP service (default)
bulwark-auth keys generate [--env E] write a new active ES256 key into KEYS_DIR
bulwark-auth keys list               list the keys in KEYS_DIR (no private parts)
"""

import argparse
import os
import sys
from pathlib import Path

from bulwark.auth import keys
from bulwark.auth.app import create_app
from bulwark.auth.settings import from_env
from bulwark.common.http import serve
from bulwark.common.logging import configure_logging
from bulwark.common.settings import SettingsError


def _serve() -> int:
    settings = from_env()
    configure_logging("auth", settings.log_level)
    keys.load_signing_keys(
        settings.keys_dir, settings.environment, generate=settings.generates_keys
    )
    serve(create_app(settings), settings.host, settings.port)
    return 0


def _keys(args: argparse.Namespace) -> int:
    directory = Path(args.dir or os.environ.get("KEYS_DIR", ".bulwark/keys"))
    if args.action == "generate":
        environment = args.env or os.environ.get("BULWARK_ENV", "development")
        existing = keys.read_keys(directory)
        if any(key.state == "active" for key in existing):
            print(f"{directory} already has an active key; rotation comes later", file=sys.stderr)
            return 1
        path = keys.write_key(directory, keys.generate_key(environment))
        print(f"wrote {path}")
        return 0
    for key in keys.read_keys(directory):
        print(f"{key.kid}\t{key.alg}\t{key.environment}\t{key.state}\t{key.created_at}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bulwark-auth`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bulwark-auth")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP service")
    keys_parser = commands.add_parser("keys", help="manage signing keys")
    keys_parser.add_argument("action", choices=["generate", "list"])
    keys_parser.add_argument("--env", choices=["development", "test", "staging", "production"])
    keys_parser.add_argument("--dir", help="key folder (default: $KEYS_DIR)")
    args = parser.parse_args(argv)
    try:
        if args.command == "keys":
            return _keys(args)
        return _serve()
    except SettingsError as error:
        print(f"bulwark-auth: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
