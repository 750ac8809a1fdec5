"""Start services as supervised processes, in order, each waited for; stop them all.

``Stack`` is generic (a list of ``ServiceSpec``); ``bulwark_services`` builds the specs of the
three Bulwark services from one ``StackConfig``. Every process leads its own session, so
stopping it (SIGTERM to the group, a grace period, then SIGKILL) also stops what it spawned,
and a Ctrl-C in the terminal reaches only us: we stop the services in reverse order. On Linux
each process also gets SIGKILL when the thread that started it dies (``die_with_parent``), so
a runner killed with SIGKILL leaves no service behind. ``Stack.supervise`` restarts a service
that exited with a growing delay (``Backoff``) while the others keep serving.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from bulwark.devstack.net import grpc_serving, http_ok
from bulwark.devstack.procs import die_with_parent, stop_process_group

ReadyProbe = Callable[[], bool]

# Every variable some service reads: none leaks from our environment into another service.
SERVICE_VARIABLES = frozenset(
    {
        "BULWARK_ENV",
        "HOST",
        "PORT",
        "LOG_LEVEL",
        "DATABASE_URL",
        "DATABASE_POOL_MODE",
        "DATABASE_READ_URL",
        "READ_YOUR_WRITES_SECONDS",
        "REPLICA_MAX_LAG_SECONDS",
        "REDIS_URL",
        "REDIS_KEY_PREFIX",
        "REDIS_TIMEOUT_SECONDS",
        "REVOCATION_FAILURE_MODE",
        "REVOCATION_RESYNC_SECONDS",
        "REFRESH_REUSE_GRACE_SECONDS",
        "RATELIMIT_RULES",
        "KEYS_DIR",
        "JWKS_MAX_AGE_SECONDS",
        "JWKS_MIN_REFRESH_SECONDS",
        "ISSUER",
        "AUDIENCE",
        "RATELIMIT_TARGET",
        "RATELIMIT_FAILURE_MODE",
        "RATELIMIT_FAILURE_MODES",
        "TRUSTED_PROXIES",
        "GEO_COUNTRY_HEADER",
        "ANOMALY_INACTIVITY_DAYS",
        "ANOMALY_BURST_WINDOW_SECONDS",
        "ANOMALY_BURST_FLOOR",
        "ANOMALY_BURST_FACTOR",
        "ANOMALY_BURST_ALPHA",
        "ANOMALY_BURST_COOLDOWN_SECONDS",
        "ANOMALY_FOREIGN_THRESHOLD",
        "ANOMALY_FOREIGN_WINDOW_SECONDS",
        "JWKS_URL",
        "APP_VERSIONS_URL",
        "APP_VERSIONS_CACHE_SECONDS",
        "METRICS_HOST",
        "METRICS_PORT",
        "UPLOADS_BACKEND",
        "UPLOADS_CONTENT_TYPES",
        "UPLOADS_MAX_BYTES",
        "UPLOADS_MAX_PIXELS",
        "UPLOADS_CHECK_SECONDS",
        "UPLOADS_PUT_URL_SECONDS",
        "UPLOADS_GET_URL_SECONDS",
        "UPLOADS_DIR",
        "UPLOADS_SIGNING_KEY",
        "S3_BUCKET",
        "S3_REGION",
        "S3_ENDPOINT_URL",
        "S3_TIMEOUT_SECONDS",
        "SMTP_URL",
        "SMTP_USERNAME",
        "SMTP_PASSWORD",
        "MAIL_FROM",
        # Each service names itself (bulwark-api ...); the other OTEL_* variables pass through.
        "OTEL_SERVICE_NAME",
        "TRUSTED_TRACE_PEERS",
    }
)


#: The OAuth clients a local stack registers (docs/oauth.md): a TV in the device flow and a
#: web app in the code flow with PKCE, redirected to a loopback address (RFC 8252 §7.3).
DEMO_OAUTH_CLIENTS = json.dumps(
    [
        {
            "client_id": "bulwark-demo-tv",
            "name": "Demo TV",
            "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
            "scopes": ["api"],
        },
        {
            "client_id": "bulwark-demo-web",
            "name": "Demo web app",
            "grant_types": ["authorization_code", "refresh_token"],
            "scopes": ["api"],
            "redirect_uris": ["http://127.0.0.1:8765/callback"],
        },
    ]
)


class StackError(RuntimeError):
    """A service exited or did not become ready in time; the message ends with its log tail."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: ``argv``, the variables set for it only, and its readiness probe.

    ``setup`` commands (e.g. ``bulwark-auth migrate``) run once, in order and to completion
    (at most ``setup_timeout`` seconds each), with the same variables, before the service's
    first start; a restart does not run them again.
    """

    name: str
    argv: Sequence[str]
    env: Mapping[str, str]
    ready: ReadyProbe
    ready_timeout: float = 30.0
    setup: Sequence[Sequence[str]] = ()
    setup_timeout: float = 120.0


@dataclass(frozen=True)
class Backoff:
    """Delays before restarting a service that exited: ``first`` seconds after its first exit,
    doubling with each further exit in a row up to ``cap``. A service that had stayed up
    ``stable_after`` seconds before it exited starts again from ``first``."""

    first: float = 0.5
    cap: float = 30.0
    stable_after: float = 60.0

    def delay(self, exits_in_a_row: int) -> float:
        """Seconds to wait before restart number ``exits_in_a_row`` (1, 2, ...)."""
        return float(min(self.cap, self.first * 2 ** max(0, exits_in_a_row - 1)))


@dataclass
class _Running:
    spec: ServiceSpec
    proc: subprocess.Popen[bytes]
    log_path: Path
    started_at: float
    pump: threading.Thread | None = None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _pump(name: str, source: IO[bytes], log_path: Path, echo: IO[str]) -> None:
    """Copy a service's output to its log file and, prefixed with its name, to ``echo``."""
    echoing = True
    with log_path.open("ab") as log:
        for line in iter(source.readline, b""):
            log.write(line)
            log.flush()
            if echoing:
                try:
                    echo.write(f"{name:<9}| {line.decode(errors='replace').rstrip()}\n")
                    echo.flush()
                except (OSError, ValueError):
                    # The terminal (or a pipe such as `| tee`) went away: keep draining the
                    # service's output into its log, or the service would block on writes.
                    echoing = False


class Stack:
    """Services started in the given order, each ready before the next starts.

    Each service's stdout and stderr are appended to ``log_dir/<name>.log``; with ``echo`` set,
    they are also written to that stream, prefixed with the service name. Use as a context
    manager (stop runs in ``__exit__`` on any exit, Ctrl-C included) or call ``start``/``stop``.
    Call ``start``, ``supervise`` and ``start_service`` from one long-lived thread (the main
    one): on Linux a service is killed when the thread that started it exits.

    ``notify`` receives one line per supervision event (an exit, a restart, serving again).
    """

    def __init__(
        self,
        services: Sequence[ServiceSpec],
        log_dir: Path,
        *,
        echo: IO[str] | None = None,
        stop_grace: float = 10.0,
        backoff: Backoff | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.services = list(services)
        self.log_dir = log_dir
        self.echo = echo
        self.stop_grace = stop_grace
        self.backoff = backoff or Backoff()
        self.notify = notify or (lambda line: None)
        self._running: list[_Running] = []
        self._exits_in_a_row: dict[str, int] = {}
        self._restart_at: dict[str, float] = {}  # service -> time.monotonic() to restart it
        self._restarted: set[str] = set()  # restarted, not yet seen ready

    def start(self) -> Self:
        """Start every service in order and wait for each to be ready.

        Raises ``StackError`` (after stopping what was started) when a service exits early or
        is not ready within its ``ready_timeout``.
        """
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for spec in self.services:
                self._set_up(spec)
                self._wait_ready(self._spawn(spec))
        except BaseException:
            self.stop()
            raise
        return self

    def _env(self, spec: ServiceSpec) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in SERVICE_VARIABLES}
        env.update(spec.env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # logs reach the file as they are written
        return env

    def _set_up(self, spec: ServiceSpec) -> None:
        log_path = self.log_dir / f"{spec.name}.log"
        for argv in spec.setup:
            with log_path.open("ab") as log:
                log.write(f"--- {spec.name} setup: {' '.join(argv)}\n".encode())
                log.flush()
                try:
                    code = subprocess.run(  # noqa: S603 - argv comes from our own specs
                        list(argv),
                        env=self._env(spec),
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        timeout=spec.setup_timeout,
                        check=False,
                    ).returncode
                except subprocess.TimeoutExpired:
                    code = None
            if code != 0:
                what = "timed out" if code is None else f"exited with code {code}"
                raise StackError(
                    f"{spec.name} setup `{' '.join(argv)}` {what}; {log_path}:\n{_tail(log_path)}"
                )
        if self.echo is not None and spec.setup:
            self.echo.write(f"{spec.name}: setup done ({len(spec.setup)} command(s))\n")

    def _spawn(self, spec: ServiceSpec) -> _Running:
        log_path = self.log_dir / f"{spec.name}.log"
        env = self._env(spec)
        with log_path.open("ab") as log:
            log.write(f"--- {spec.name} starting: {' '.join(spec.argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(  # noqa: S603 - argv comes from our own specs
                list(spec.argv),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log if self.echo is None else subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prctl, set up in advance
            )
        running = _Running(spec, proc, log_path, started_at=time.monotonic())
        self._running.append(running)
        # In start order, also after a restart: `stop` stops them last started first.
        order = [s.name for s in self.services]
        self._running.sort(key=lambda r: order.index(r.spec.name))
        if self.echo is not None and proc.stdout is not None:
            running.pump = threading.Thread(
                target=_pump,
                args=(spec.name, proc.stdout, log_path, self.echo),
                name=f"log-{spec.name}",
                daemon=True,
            )
            running.pump.start()
        return running

    def _wait_ready(self, running: _Running) -> None:
        spec = running.spec
        deadline = time.monotonic() + spec.ready_timeout
        while True:
            code = running.proc.poll()
            if code is not None:
                raise StackError(
                    f"{spec.name} exited with code {code} before it was ready; "
                    f"{running.log_path}:\n{_tail(running.log_path)}"
                )
            if spec.ready():
                return
            if time.monotonic() > deadline:
                raise StackError(
                    f"{spec.name} was not ready after {spec.ready_timeout:.0f} s; "
                    f"{running.log_path}:\n{_tail(running.log_path)}"
                )
            time.sleep(0.2)

    def stop_service(self, name: str) -> None:
        """Stop the running service ``name`` (as `stop` does), and do not restart it; the
        others keep running.

        Raises:
            KeyError: no service of that name is running or waiting to be restarted.
        """
        if self._restart_at.pop(name, None) is not None:
            return  # it had exited and was waiting for its restart
        running = next((r for r in self._running if r.spec.name == name), None)
        if running is None:
            raise KeyError(name)
        self._running.remove(running)
        self._reap(running)

    def start_service(self, name: str) -> None:
        """Start service ``name`` again (same spec: same port and variables), wait until ready.

        Raises:
            KeyError: ``name`` is not one of this stack's services.
            StackError: it exited early or was not ready in time.
        """
        spec = next((s for s in self.services if s.name == name), None)
        if spec is None:
            raise KeyError(name)
        self._restart_at.pop(name, None)
        self._wait_ready(self._spawn(spec))

    def pid(self, name: str) -> int:
        """Process id of the running service ``name`` (say, to pause it with SIGSTOP).

        Raises:
            KeyError: no service of that name is running.
        """
        for running in self._running:
            if running.spec.name == name:
                return running.proc.pid
        raise KeyError(name)

    def pids(self) -> dict[str, int]:
        """Process id of each running service (those waiting to be restarted are left out)."""
        return {r.spec.name: r.proc.pid for r in self._running}

    def exited(self) -> dict[str, int]:
        """Services whose process has exited, with their exit codes."""
        return {r.spec.name: code for r in self._running if (code := r.proc.poll()) is not None}

    def supervise(self) -> None:
        """One round of supervision; call it every fraction of a second.

        A service whose process exited is reaped (its whole group) and started again after
        ``backoff.delay(n)`` seconds, n counting its exits in a row; the others are left alone.
        Restarts do not wait for readiness: a restarted service is reported as serving again
        once its probe says so. A restart that cannot even spawn counts as another exit.
        """
        now = time.monotonic()
        for running in list(self._running):
            name = running.spec.name
            code = running.proc.poll()
            if code is None:
                if name in self._restarted and running.spec.ready():
                    self._restarted.discard(name)
                    self.notify(f"{name} is serving again (pid {running.proc.pid})")
                continue
            self._running.remove(running)
            self._reap(running)
            self._restarted.discard(name)
            uptime = now - running.started_at
            self._schedule_restart(name, f"exited with code {code} after {uptime:.1f} s", uptime)
        for name, when in sorted(self._restart_at.items(), key=lambda item: item[1]):
            if when > now:
                continue
            del self._restart_at[name]
            spec = next(s for s in self.services if s.name == name)
            try:
                restarted = self._spawn(spec)
            except OSError as exc:
                self._schedule_restart(name, f"could not be started ({exc})", 0.0)
                continue
            self._restarted.add(name)
            self.notify(f"{name} restarted (pid {restarted.proc.pid})")

    def _schedule_restart(self, name: str, what: str, uptime: float) -> None:
        exits = 1 if uptime >= self.backoff.stable_after else self._exits_in_a_row.get(name, 0) + 1
        self._exits_in_a_row[name] = exits
        delay = self.backoff.delay(exits)
        self._restart_at[name] = time.monotonic() + delay
        self.notify(f"{name} {what}; restarting it in {delay:g} s (exit {exits} in a row)")

    def _reap(self, running: _Running) -> None:
        """Stop (or, if it exited, clean up after) one service: its group, its log pump."""
        stop_process_group(running.proc, grace=self.stop_grace)
        if running.pump is not None:
            running.pump.join(timeout=2.0)
        if running.proc.stdout is not None:
            running.proc.stdout.close()

    def stop(self) -> None:
        """Stop every started service, last started first; cancel pending restarts.
        Idempotent."""
        self._restart_at.clear()
        self._restarted.clear()
        while self._running:
            self._reap(self._running.pop())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def console_script(name: str) -> str:
    """Path of console script ``name``: from our own environment first, else from ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed (run `make install`)")
    return found


@dataclass
class StackConfig:
    """Settings of one Bulwark stack: where the services listen and what they connect to.

    ``smtp_url`` is where the auth service sends mail (``SMTP_URL``; a local ``SmtpSink``'s
    ``url``), None for none. ``env`` adds or overrides variables per service
    (``{"auth": {"LOG_LEVEL": "debug"}}``).
    """

    auth_database_url: str
    api_database_url: str
    redis_url: str
    host: str = "127.0.0.1"
    api_port: int = 8000
    auth_port: int = 8001
    ratelimit_port: int = 50051
    # Prometheus endpoints (METRICS_PORT), service -> port; a service not named has none.
    metrics_ports: Mapping[str, int] = field(default_factory=dict)
    bulwark_env: str = "development"
    keys_dir: Path = Path(".bulwark/keys")
    uploads_dir: Path = Path(".bulwark/uploads")  # the API's local uploads backend
    redis_key_prefix: str = "rl:"
    session_key_prefix: str = "bulwark:"  # auth and api: the revoked-session set
    ratelimit_rules: Path | None = None
    log_level: str = "info"
    audience: str = "bulwark-api"
    issuer: str | None = None
    ready_timeout: float = 30.0
    smtp_url: str | None = None
    env: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def auth_url(self) -> str:
        """Base URL of the auth service, e.g. ``http://127.0.0.1:8001``."""
        return f"http://{self.host}:{self.auth_port}"

    @property
    def api_url(self) -> str:
        """Base URL of the resource API, e.g. ``http://127.0.0.1:8000``."""
        return f"http://{self.host}:{self.api_port}"

    @property
    def ratelimit_target(self) -> str:
        """gRPC target of the rate limiter, ``host:port``."""
        return f"{self.host}:{self.ratelimit_port}"

    def metrics_url(self, service: str) -> str | None:
        """URL of ``service``'s Prometheus endpoint (``http://127.0.0.1:9464/metrics``), or
        None when it has none."""
        port = self.metrics_ports.get(service)
        return None if port is None else f"http://{self.host}:{port}/metrics"

    def service_env(self) -> dict[str, dict[str, str]]:
        """The variables each service is started with (beyond the inherited environment)."""
        common = {"BULWARK_ENV": self.bulwark_env, "HOST": self.host, "LOG_LEVEL": self.log_level}
        issuer = self.issuer or self.auth_url
        ratelimit = {
            **common,
            "PORT": str(self.ratelimit_port),
            "REDIS_URL": self.redis_url,
            "REDIS_KEY_PREFIX": self.redis_key_prefix,
        }
        if self.ratelimit_rules is not None:
            ratelimit["RATELIMIT_RULES"] = str(self.ratelimit_rules)
        envs = {
            "ratelimit": ratelimit,
            "auth": {
                **common,
                "PORT": str(self.auth_port),
                "DATABASE_URL": self.auth_database_url,
                "KEYS_DIR": str(self.keys_dir),
                # The API publishes the minimum app versions; auth applies them too.
                "APP_VERSIONS_URL": f"{self.api_url}/v1/app-versions",
                "ISSUER": issuer,
                "AUDIENCE": self.audience,
                "RATELIMIT_TARGET": self.ratelimit_target,
                "REDIS_URL": self.redis_url,
                "REDIS_KEY_PREFIX": self.session_key_prefix,
                "OAUTH_CLIENTS": DEMO_OAUTH_CLIENTS,
            },
            "api": {
                **common,
                "PORT": str(self.api_port),
                "DATABASE_URL": self.api_database_url,
                "JWKS_URL": f"{self.auth_url}/.well-known/jwks.json",
                "UPLOADS_DIR": str(self.uploads_dir),
                "ISSUER": issuer,
                "AUDIENCE": self.audience,
                "RATELIMIT_TARGET": self.ratelimit_target,
                "REDIS_URL": self.redis_url,
                "REDIS_KEY_PREFIX": self.session_key_prefix,
            },
        }
        if self.smtp_url is not None:
            envs["auth"]["SMTP_URL"] = self.smtp_url
        for service, port in self.metrics_ports.items():
            envs[service]["METRICS_PORT"] = str(port)
        for service, extra in self.env.items():
            envs[service].update(extra)
        return envs


SERVICE_ORDER = ("ratelimit", "auth", "api")


def bulwark_services(config: StackConfig, only: Sequence[str] = SERVICE_ORDER) -> list[ServiceSpec]:
    """Specs of the Bulwark services named in ``only`` (default: all three), in start order:
    ratelimit (ready when gRPC health says SERVING), auth and api (ready when ``/readyz`` is
    200)."""
    envs = config.service_env()
    probes: dict[str, ReadyProbe] = {
        "ratelimit": lambda: grpc_serving(config.ratelimit_target),
        "auth": lambda: http_ok(f"{config.auth_url}/readyz"),
        "api": lambda: http_ok(f"{config.api_url}/readyz"),
    }
    unknown = set(only) - set(SERVICE_ORDER)
    if unknown:
        raise ValueError(f"unknown services: {sorted(unknown)}")
    return [
        ServiceSpec(
            name=name,
            argv=[console_script(f"bulwark-{name}"), "serve"],
            env=envs[name],
            ready=probes[name],
            ready_timeout=config.ready_timeout,
            # Migrations are a one-shot command, as in a deployment's Job: never the server's.
            setup=[] if name == "ratelimit" else [[console_script(f"bulwark-{name}"), "migrate"]],
        )
        for name in SERVICE_ORDER
        if name in only
    ]
