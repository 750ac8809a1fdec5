"""``bulwark-dev``: run the whole stack locally and supervise it (``run``), stop what an earlier
run left (``stop``), play a mobile session against a running stack (``demo``), or read the
mail its SMTP sink received (``mail``)."""

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

from bulwark.devstack.databases import DEFAULT_DATABASES, create_databases, unique_names
from bulwark.devstack.demo import run_demo
from bulwark.devstack.embedded import EmbeddedPostgres, EmbeddedRedis, EmbeddedServerError
from bulwark.devstack.mail import SmtpSink
from bulwark.devstack.mailbox import Mailbox
from bulwark.devstack.mailview import listing, shown
from bulwark.devstack.net import free_port
from bulwark.devstack.ports import SERVICES, Ports, choose_ports
from bulwark.devstack.procs import process_start
from bulwark.devstack.runstate import (
    RunFile,
    RunState,
    ServiceRecord,
    leftover_message,
    stop_leftovers,
    this_process,
)
from bulwark.devstack.stack import (
    SERVICE_ORDER,
    Stack,
    StackConfig,
    StackError,
    bulwark_services,
)

HOST = "127.0.0.1"
DEFAULT_API = "http://127.0.0.1:8000"
DEFAULT_AUTH = "http://127.0.0.1:8001"


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


def _run_file(root: Path) -> RunFile:
    return RunFile(root / ".bulwark" / "run" / "stack.json")


def mail_dir(root: Path) -> Path:
    """Where the SMTP sink of ``bulwark-dev run`` stores what it receives."""
    return root / ".bulwark" / "mail"


def _port(text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port (1-65535)")
    return port


def _choose_ports(args: argparse.Namespace) -> Ports:
    return choose_ports(
        {name: getattr(args, f"{name}_port") for name in SERVICES},
        {name: getattr(args, f"{name}_metrics_port") for name in SERVICES},
        free=args.free_ports,
        host=HOST,
    )


def _run_state(config: StackConfig, sink: SmtpSink | None, pids: dict[str, int]) -> RunState:
    runner_pid, runner_started = this_process()
    addresses = {
        "api": config.api_url,
        "auth": config.auth_url,
        "ratelimit": config.ratelimit_target,
    }
    ports = {"api": config.api_port, "auth": config.auth_port, "ratelimit": config.ratelimit_port}
    services = {}
    for name in SERVICE_ORDER:
        pid = pids.get(name, 0)  # 0 while it waits for a restart
        services[name] = ServiceRecord(
            pid=pid,
            started=process_start(pid) if pid else None,
            port=ports[name],
            address=addresses[name],
            metrics_port=config.metrics_ports.get(name),
            metrics_url=config.metrics_url(name),
        )
    if sink is None:
        return RunState(runner_pid, runner_started, services)
    return RunState(runner_pid, runner_started, services, sink.url, str(sink.folder))


def _banner(config: StackConfig, sink: SmtpSink | None, log_dir: Path, run_file: Path) -> str:
    rows = [
        ("api", config.api_url),
        ("auth", config.auth_url),
        ("ratelimit", f"{config.ratelimit_target} (gRPC)"),
    ]
    lines = [
        f"  {name:<10} {address:<28} metrics {config.metrics_url(name)}" for name, address in rows
    ]
    if sink is not None:
        lines.append(
            f"  {'mail':<10} {sink.url:<28} SMTP sink: `bulwark-dev mail` lists what was sent"
        )
    else:
        lines.append(f"  {'mail':<10} to SMTP_URL from the environment (no local SMTP sink)")
    return (
        f"\nBulwark is up (logs in {log_dir}, state in {run_file}):\n"
        + "\n".join(lines)
        + "\nA service that exits is restarted; Ctrl-C stops everything."
    )


def _preflight(args: argparse.Namespace, run_file: RunFile) -> Ports | None:
    """Deal with an earlier run still alive (name it, or stop it with ``--replace``), choose
    the ports and check them; None (after saying why) when we cannot start."""
    if leftovers := run_file.leftovers():
        if not args.replace:
            _say(f"bulwark-dev: {leftover_message(leftovers, run_file.path)}")
            return None
        _say("bulwark-dev: stopping the earlier run (--replace):")
        _say("\n".join(leftover.describe() for leftover in leftovers))
        stop_leftovers(leftovers)
        run_file.remove()
    ports = _choose_ports(args)
    if taken := ports.taken(HOST):
        listed = ", ".join(f"{port} ({label})" for label, port in taken)
        _say(
            f"bulwark-dev: ports already in use on {HOST}: {listed}. Another program listens "
            "there (a stack of another checkout?): stop it, or move this one (--api-port ..., "
            "see `bulwark-dev run --help`, or --free-ports)."
        )
        return None
    return ports


def _mail_sink(
    args: argparse.Namespace, ports: Ports, folder: Path, cleanup: ExitStack
) -> SmtpSink | None:
    """The SMTP sink the auth service sends to, started, or None when SMTP_URL is set."""
    if os.environ.get("SMTP_URL"):
        return None
    port = args.smtp_port
    if port is None:
        taken = {given for _, given in ports.labelled()}
        port = free_port(HOST)
        while port in taken:
            port = free_port(HOST)
    try:
        sink = cleanup.enter_context(SmtpSink(folder, host=HOST, port=port))
    except OSError as exc:
        raise OSError(f"the SMTP sink cannot listen on {HOST}:{port} ({exc})") from exc
    print(f"SMTP sink          {sink.url}  (mail in {folder}: `bulwark-dev mail`)")
    return sink


def _mail_env(sink: SmtpSink | None) -> dict[str, str]:
    """The auth service's mail variables from our environment, beside SMTP_URL: MAIL_FROM
    when set, and SMTP_USERNAME / SMTP_PASSWORD for an SMTP_URL of ours (not for the sink)."""
    names = ["MAIL_FROM"] + (["SMTP_USERNAME", "SMTP_PASSWORD"] if sink is None else [])
    return {name: os.environ[name] for name in names if name in os.environ}


def _configure(
    args: argparse.Namespace, ports: Ports, state: Path, cleanup: ExitStack
) -> tuple[StackConfig, SmtpSink | None]:
    """Postgres and Redis (the embedded ones unless DATABASE_URL / REDIS_URL are set), the
    databases, the SMTP sink (unless SMTP_URL is set), and the stack's settings."""
    databases = unique_names(args.database_suffix) if args.database_suffix else DEFAULT_DATABASES
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
    urls = asyncio.run(create_databases(database_url, databases.values()))
    sink = _mail_sink(args, ports, state / "mail", cleanup)
    config = StackConfig(
        auth_database_url=urls[databases["auth"]],
        api_database_url=urls[databases["api"]],
        redis_url=redis_url,
        host=HOST,
        api_port=ports.service["api"],
        auth_port=ports.service["auth"],
        ratelimit_port=ports.service["ratelimit"],
        metrics_ports=ports.metrics,
        bulwark_env="development",
        keys_dir=state / "keys",
        uploads_dir=state / "uploads",
        log_level=args.log_level,
        smtp_url=sink.url if sink is not None else os.environ["SMTP_URL"],
        env={"auth": _mail_env(sink)},
    )
    return config, sink


def _supervise(
    config: StackConfig,
    sink: SmtpSink | None,
    log_dir: Path,
    run_file: RunFile,
    cleanup: ExitStack,
) -> None:
    """Start the services, record them in the run file, and restart any that exits; returns
    only by an exception (Ctrl-C, SIGTERM, a service not ready at start-up)."""
    # Registered before the stack, so it runs after the stack has stopped.
    cleanup.callback(run_file.remove, os.getpid())
    stack = cleanup.enter_context(
        Stack(
            bulwark_services(config),
            log_dir,
            echo=sys.stdout,
            notify=lambda line: _say(f"bulwark-dev: {line}"),
        )
    )
    pids = stack.pids()
    run_file.write(_run_state(config, sink, pids))
    print(_banner(config, sink, log_dir, run_file.path), flush=True)
    while True:
        stack.supervise()
        if (now := stack.pids()) != pids:
            pids = now
            run_file.write(_run_state(config, sink, pids))
        time.sleep(0.2)


def _run(args: argparse.Namespace) -> int:
    root = repo_root()
    run_file = _run_file(root)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Also when started in the background with SIGINT ignored (`make run &`, scripts).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with ExitStack() as cleanup:
        try:
            ports = _preflight(args, run_file)
            if ports is None:
                return 1
            config, sink = _configure(args, ports, root / ".bulwark", cleanup)
            _supervise(config, sink, root / ".bulwark" / "logs", run_file, cleanup)
        except (KeyboardInterrupt, _Stopped):
            _say("\nstopping...")
            return 0
        except (
            StackError,
            EmbeddedServerError,
            OSError,
            subprocess.SubprocessError,
            ValueError,
        ) as exc:
            _say(f"bulwark-dev: {exc}")
            return 1
        finally:
            # Stopping takes a few seconds: a second Ctrl-C must not cut it short.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return 1  # not reached: _supervise returns only by an exception


def _stop(args: argparse.Namespace) -> int:
    root = repo_root()
    run_file = _run_file(root)
    leftovers = run_file.leftovers()
    if leftovers:
        print(f"stopping the run recorded in {run_file.path}:")
        print("\n".join(leftover.describe() for leftover in leftovers), flush=True)
        stop_leftovers(leftovers)
    else:
        print(f"no bulwark-dev run is alive here ({run_file.path})")
    run_file.remove()
    data = root / ".bulwark" / "data"
    code = 0
    try:
        for what, server in (
            ("Postgres", EmbeddedPostgres(data / "postgres")),
            ("Redis", EmbeddedRedis(data / "redis")),
        ):
            if (pid := server.stop_leftover()) is not None:
                print(f"stopped the embedded {what} an earlier run left (pid {pid})")
    except EmbeddedServerError as exc:
        _say(f"bulwark-dev: {exc}")
        code = 1
    return code


def _demo(args: argparse.Namespace) -> int:
    run_file = _run_file(repo_root())
    recorded = run_file.read() if run_file.leftovers() else None
    api = args.api or (recorded and recorded.address("api")) or DEFAULT_API
    auth = args.auth or (recorded and recorded.address("auth")) or DEFAULT_AUTH
    source = f" (from {run_file.path})" if recorded and not (args.api and args.auth) else ""
    print(f"demo against api {api}, auth {auth}{source}")
    failures = run_demo(api.rstrip("/"), auth.rstrip("/"), sys.stdout)
    print("demo: all steps as expected" if not failures else f"demo: {failures} step(s) failed")
    return 0 if not failures else 1


def _out(text: str) -> None:
    """Print to stdout; a reader that went away (``| head``) ends the output quietly."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _mail(args: argparse.Namespace) -> int:
    folder = args.dir or mail_dir(repo_root())
    entries = Mailbox(folder).entries()
    if args.mail_command != "show":
        _out(listing(folder, entries, as_json=bool(args.json)))
        return 0
    if not entries:
        _say(f"bulwark-dev: no mail in {folder} yet")
        return 1
    index = len(entries) if args.last or args.index is None else args.index
    if not 1 <= index <= len(entries):
        _say(f"bulwark-dev: no message {index}: {len(entries)} in {folder} (1-{len(entries)})")
        return 1
    path, message = entries[index - 1]
    _out(shown(index, path, message, html=args.html, as_json=bool(args.json)))
    return 0


def _mail_options(parser: argparse.ArgumentParser, *, default: object) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="JSON, for scripts")
    parser.add_argument(
        "--dir",
        type=Path,
        default=default,
        help="the mail folder (default: .bulwark/mail of this checkout)",
    )


def _add_mail_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    mail = sub.add_parser(
        "mail",
        help="list the mail the local SMTP sink received (newest last); `mail show N` prints one",
        description="The SMTP sink of `bulwark-dev run` stores each message the services send "
        "in .bulwark/mail (the newest 1000). This reads that folder, while the stack runs or "
        "after.",
    )
    _mail_options(mail, default=None)
    mail.set_defaults(func=_mail, mail_command=None)
    mail_sub = mail.add_subparsers(dest="mail_command")
    show = mail_sub.add_parser(
        "show",
        help="print message N (from the listing; default: the newest)",
        description="Prints the header fields and the text/plain part, and says whether there "
        "is an HTML part.",
    )
    # SUPPRESS: given before `show`, they are not reset to a default after it.
    _mail_options(show, default=argparse.SUPPRESS)
    show.add_argument("index", nargs="?", type=int, metavar="N", help="1 is the oldest")
    show.add_argument("--last", action="store_true", help="the newest message")
    show.add_argument("--html", action="store_true", help="print the HTML part too")


def build_parser() -> argparse.ArgumentParser:
    """The ``bulwark-dev`` argument parser (subcommands ``run``, ``stop``, ``demo``, ``mail``)."""
    parser = argparse.ArgumentParser(prog="bulwark-dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="run the stack on 127.0.0.1 until Ctrl-C (embedded Postgres/Redis unless "
        "DATABASE_URL/REDIS_URL are set); a service that exits is restarted",
        description="Ports not given are the defaults (api 8000, auth 8001, ratelimit 50051, "
        "metrics 9464-9466); a metrics port whose service was moved moves to a free port; "
        "--free-ports picks free ones for every port not given.",
    )
    for name in SERVICES:
        run.add_argument(f"--{name}-port", type=_port, metavar="PORT")
    for name in SERVICES:
        run.add_argument(f"--{name}-metrics-port", type=_port, metavar="PORT")
    run.add_argument(
        "--smtp-port",
        type=_port,
        metavar="PORT",
        help="port of the SMTP sink (default: a free one; no sink when SMTP_URL is set)",
    )
    run.add_argument(
        "--free-ports", action="store_true", help="free ports for every port not given"
    )
    run.add_argument(
        "--replace", action="store_true", help="stop an earlier run of this checkout first"
    )
    run.add_argument(
        "--database-suffix",
        metavar="SUFFIX",
        help="use databases bulwark_auth_SUFFIX and bulwark_api_SUFFIX (to share a server "
        "given by DATABASE_URL with other stacks)",
    )
    run.add_argument("--log-level", default="info")
    run.set_defaults(func=_run)
    stop = sub.add_parser(
        "stop",
        help="stop what an earlier run of this checkout left running (services, runner, "
        "embedded servers)",
    )
    stop.set_defaults(func=_stop)
    demo = sub.add_parser("demo", help="play one scripted mobile session against a running stack")
    demo.add_argument(
        "--api", help=f"resource API base URL (default: the running stack's, else {DEFAULT_API})"
    )
    demo.add_argument(
        "--auth", help=f"auth service base URL (default: the running stack's, else {DEFAULT_AUTH})"
    )
    demo.set_defaults(func=_demo)
    _add_mail_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bulwark-dev``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
