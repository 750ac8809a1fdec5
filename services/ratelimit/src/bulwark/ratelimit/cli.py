"""``bulwark-ratelimit [serve]``: run the rate-limit server until SIGTERM or SIGINT."""

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence

import uvloop

from bulwark.common.logging import configure_logging, get_logger
from bulwark.common.metrics import MetricsBindError, start_metrics
from bulwark.common.settings import SettingsError
from bulwark.common.telemetry import start_tracing, tracing_settings
from bulwark.ratelimit.rules import RulesError
from bulwark.ratelimit.server import BindError, RateLimitServer, build_server
from bulwark.ratelimit.settings import from_env

GRACE_SECONDS = 5.0

log = get_logger(__name__)


async def serve(server: RateLimitServer) -> None:
    """Start ``server``, log its bound port, and stop it gracefully on SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    port = await server.start()
    log.info("ratelimit_serving", host=server.settings.host, port=port)
    await stopping.wait()
    log.info("ratelimit_stopping", grace_seconds=GRACE_SECONDS)
    await server.stop(GRACE_SECONDS)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point.

    Exits 2 with a one-line message when settings or rules are invalid, 1 when the address
    cannot be bound, 0 after a graceful stop.
    """
    parser = argparse.ArgumentParser(prog="bulwark-ratelimit", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve"])
    parser.parse_args(argv)
    try:
        settings = from_env(os.environ)
        tracing_config = tracing_settings(os.environ)
        server = build_server(settings)
    except (SettingsError, RulesError) as exc:
        print(f"bulwark-ratelimit: {exc}", file=sys.stderr)
        sys.exit(2)
    configure_logging("ratelimit", settings.log_level)
    try:
        if settings.metrics is not None:
            start_metrics("ratelimit", settings.metrics)
    except MetricsBindError as exc:
        print(f"bulwark-ratelimit: {exc}", file=sys.stderr)
        sys.exit(2)
    tracing = start_tracing(tracing_config, "bulwark-ratelimit", settings.environment)
    try:
        gc.freeze()  # start-up objects leave the collector's generations: shorter pauses
        uvloop.run(serve(server))  # libuv's loop: cheaper on the latency-critical path
    except BindError as exc:
        print(f"bulwark-ratelimit: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        tracing.shutdown()  # export the spans still queued
