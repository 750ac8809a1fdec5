"""``bulwark-dev``: run the whole stack locally (``run``) or play a mobile session (``demo``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from bulwark.devstack.databases import DEFAULT_DATABASES, create_databases
from bulwark.devstack.demo import run_demo
from bulwark.devstack.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError
from bulwark.devstack.stack import Stack, StackConfig, StackError, bulwark_services


def repo_root() -> Path:
    """The checkout's root: the nearest parent of the working directory holding ``uv.lock``
    or ``.git``, else the working directory."""
    cwd = Path.cwd().resolve()
    for folder in (cwd, *cwd.parents):
        if (folder / "uv.lock").exists() or (folder / ".git").exists():
            return folder
    return cwd


def _say(message: str) -> None:
    """Print to stderr; a closed terminal or pipe must not stop the clean-up."""
    with contextlib.suppress(OSError, ValueError):
        print(message, file=sys.stderr, flush=True)


class _Stopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised from the SIGTERM handler so that ``finally`` blocks run."""


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise _Stopped


def _run(args: argparse.Namespace) -> int:
    root = repo_root()
    state = root / ".bulwark"
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background with SIGINT ignored (`make run &`, scripts).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ExitStack() as cleanup:
        try:
            database_url = os.environ.get("DATABASE_URL")
            if not database_url:
                pg = cleanup.enter_context(EmbeddedPostgres(state / "data" / "postgres"))
                database_url = pg.url
                print(f"embedded Postgres  {database_url}  (data in {pg.pgdata})")
            redis_url = os.environ.get("REDIS_URL")
            if not redis_url:
                redis = cleanup.enter_context(EmbeddedRedis(state / "data" / "redis"))
                redis_url = redis.url
                print(f"embedded Redis     {redis_url}")
            urls = asyncio.run(create_databases(database_url, DEFAULT_DATABASES.values()))
            config = StackConfig(
                auth_database_url=urls[DEFAULT_DATABASES["auth"]],
                api_database_url=urls[DEFAULT_DATABASES["api"]],
                redis_url=redis_url,
                api_port=args.api_port,
                auth_port=args.auth_port,
                ratelimit_port=args.ratelimit_port,
                metrics_ports={
                    "api": args.api_metrics_port,
                    "auth": args.auth_metrics_port,
                    "ratelimit": args.ratelimit_metrics_port,
                },
                bulwark_env="development",
                keys_dir=state / "keys",
                log_level=args.log_level,
            )
            log_dir = state / "logs"
            stack = cleanup.enter_context(Stack(bulwark_services(config), log_dir, echo=sys.stdout))
            print(
                f"\nBulwark is up (logs in {log_dir}):\n"
                f"  api        {config.api_url}\n"
                f"  auth       {config.auth_url}\n"
                f"  ratelimit  {config.ratelimit_target} (gRPC)\n"
                f"  metrics    {config.metrics_url('api')}  {config.metrics_url('auth')}  "
                f"{config.metrics_url('ratelimit')}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
            while not (exited := stack.exited()):
                time.sleep(0.5)
        except (KeyboardInterrupt, _Stopped):
            _say("\nstopping...")
            return 0
        except (StackError, EmbeddedServerError, OSError, subprocess.SubprocessError) as exc:
            _say(f"bulwark-dev: {exc}")
            return 1
        else:
            _say(f"stopping: a service exited unexpectedly: {exited}")
            return 1
        finally:
            # Stopping takes a few seconds: a second Ctrl-C must not cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _demo(args: argparse.Namespace) -> int:
    failures = run_demo(args.api.rstrip("/"), args.auth.rstrip("/"), sys.stdout)
    print("demo: all steps as expected" if not failures else f"demo: {failures} step(s) failed")
    return 0 if not failures else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``bulwark-dev`` argument parser (subcommands ``run`` and ``demo``)."""
    parser = argparse.ArgumentParser(prog="bulwark-dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the stack on 127.0.0.1 until Ctrl-C (embedded Postgres/Redis unless "
        "DATABASE_URL/REDIS_URL are set)",
    )
    run.add_argument("--api-port", type=int, default=8000)
    run.add_argument("--auth-port", type=int, default=8001)
    run.add_argument("--ratelimit-port", type=int, default=50051)
    # Prometheus endpoints (docs/metrics.md); 9464 is OpenTelemetry's default for it.
    run.add_argument("--api-metrics-port", type=int, default=9464)
    run.add_argument("--auth-metrics-port", type=int, default=9465)
    run.add_argument("--ratelimit-metrics-port", type=int, default=9466)
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=_run)
    demo = sub.add_parser("demo", help="play one scripted mobile session against a running stack")
    demo.add_argument("--api", default="http://127.0.0.1:8000", help="resource API base URL")
    demo.add_argument("--auth", default="http://127.0.0.1:8001", help="auth service base URL")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bulwark-dev``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
