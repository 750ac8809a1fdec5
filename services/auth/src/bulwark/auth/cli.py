"""``bulwark-auth``: run the service, apply migrations, manage signing keys.

bulwark-auth serve                   run the HTTP service (default)
bulwark-auth openapi                  print the OpenAPI document (docs/openapi/auth.json)
bulwark-auth migrate                 apply pending migrations to DATABASE_URL, then exit
bulwark-auth keys generate|list|rotate|retire|revoke KID
                                     manage the keys in KEYS_DIR (bulwark.auth.keys.commands)
bulwark-auth flags list|review ...   the anomaly flags in DATABASE_URL (docs/anomalies.md)
"""

import os
import sys

from bulwark.auth import keys
from bulwark.auth.app import MIGRATIONS, create_app, openapi_document
from bulwark.auth.keys import commands as key_commands
from bulwark.auth.settings import from_env
from bulwark.common import flag_commands
from bulwark.common.command_line import CommandParser
from bulwark.common.http import serve
from bulwark.common.logging import configure_logging
from bulwark.common.metrics import MetricsBindError, start_metrics
from bulwark.common.migrations import run_migrate_command
from bulwark.common.openapi.document import render
from bulwark.common.settings import SettingsError
from bulwark.common.telemetry import start_tracing, tracing_settings


def _serve() -> int:
    settings = from_env()
    tracing_config = tracing_settings(os.environ)
    configure_logging("auth", settings.log_level)
    if settings.metrics is not None:
        start_metrics("auth", settings.metrics)
    keys.load_signing_keys(
        settings.keys_dir, settings.environment, generate=settings.generates_keys
    )
    tracing = start_tracing(tracing_config, "bulwark-auth", settings.environment, postgres=True)
    try:
        serve(
            tracing.asgi(create_app(settings)),
            settings.host,
            settings.port,
            limits=settings.http,
            trusted_proxies=settings.trusted_proxies,
        )
    finally:
        tracing.shutdown()  # export the spans still queued
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bulwark-auth`` command; returns the exit status."""
    parser = CommandParser(prog="bulwark-auth")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP service")
    commands.add_parser("migrate", help="apply pending migrations, then exit")
    commands.add_parser("openapi", help="print the OpenAPI document (docs/openapi/), then exit")
    key_commands.add_parser(commands)
    flag_commands.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "openapi":
        sys.stdout.write(render(openapi_document()))
        return 0
    if args.command == "migrate":
        return run_migrate_command("bulwark-auth", MIGRATIONS, os.environ)
    try:
        if args.command == "keys":
            return key_commands.run(args)
        if args.command == "flags":
            return flag_commands.run(args, program="bulwark-auth")
        return _serve()
    except (SettingsError, MetricsBindError) as error:
        print(f"bulwark-auth: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
