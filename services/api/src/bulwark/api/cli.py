"""``bulwark-api``: run the resource API (``bulwark-api serve``, the default)."""

import argparse
import sys

from bulwark.api.app import create_app
from bulwark.api.settings import from_env
from bulwark.common.http import serve
from bulwark.common.logging import configure_logging
from bulwark.common.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bulwark-api`` command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="bulwark-api")
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args(argv)
    try:
        settings = from_env()
    except SettingsError as error:
        print(f"bulwark-api: configuration error: {error}", file=sys.stderr)
        return 2
    configure_logging("api", settings.log_level)
    serve(create_app(settings), settings.host, settings.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
