"""``bulwark-api``: run the resource API, review anomaly flags, set minimum app versions.

bulwark-api serve                    run the HTTP service (default)
bulwark-api openapi                  print the OpenAPI document (docs/openapi/api.json)
bulwark-api migrate                  apply pending migrations to DATABASE_URL, then exit
bulwark-api flags list|review ...    the anomaly flags in DATABASE_URL (docs/anomalies.md)
bulwark-api app-versions list|set|unset ...
                                     minimum app versions in DATABASE_URL (docs/app-versions.md)
"""

import os
import sys

from bulwark.api.app import MIGRATIONS, create_app, openapi_document
from bulwark.api.app_versions import commands as app_version_commands
from bulwark.api.settings import from_env
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
    configure_logging("api", settings.log_level)
    if settings.metrics is not None:
        start_metrics("api", settings.metrics)
    tracing = start_tracing(tracing_config, "bulwark-api", settings.environment, postgres=True)
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
    """Entry point of the ``bulwark-api`` command; returns the exit status."""
    parser = CommandParser(prog="bulwark-api")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the HTTP service")
    commands.add_parser("migrate", help="apply pending migrations, then exit")
    commands.add_parser("openapi", help="print the OpenAPI document (docs/openapi/), then exit")
    flag_commands.add_parser(commands)
    app_version_commands.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "openapi":
        sys.stdout.write(render(openapi_document()))
        return 0
    if args.command == "migrate":
        return run_migrate_command("bulwark-api", MIGRATIONS, os.environ)
    try:
        if args.command == "flags":
            return flag_commands.run(args, program="bulwark-api")
        if args.command == "app-versions":
            return app_version_commands.run(args)
        return _serve()
    except (SettingsError, MetricsBindError) as error:
        print(f"bulwark-api: configuration error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
