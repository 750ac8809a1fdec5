"""Does a login flood stall the auth service? Latency of cheap requests with and without one.

A login costs one argon2id hash (about 20 ms of CPU at the OWASP minimum). ``bulwark.auth``
runs it in a small thread pool, so the event loop stays free for everything else. If argon2
ran on the loop, every request to the auth service would queue behind the logins. This
benchmark measures, in one run:

- ``GET /.well-known/jwks.json`` (auth; no I/O, no argon2),
- ``POST /oauth2/token`` with ``grant_type=refresh_token`` (auth; one transaction and one
  ES256 signature, no argon2), each probe rotating the refresh token the previous one got,
- ``GET /v1/me`` (the API, a separate process; a control for CPU contention),

each probe sending one request every ``--interval-ms`` over its own keep-alive connection,
first with no other load ("idle"), then while ``--login-clients`` clients log in back to back
("flood", after ``--warmup`` seconds), and prints p50/p90/p99/max per endpoint and phase, with
the flood's login rate and statuses. The flood runs in a child process, so its client work does
not delay the probes' own event loop.

Without ``--auth``, it starts its own stack with ``bulwark.devstack`` (as ``make run`` does):
Postgres and Redis from ``DATABASE_URL`` / ``REDIS_URL`` when set, else the embedded servers;
fresh databases, free loopback ports, a fresh key, and a rules file that raises the per-IP
limits (login, registration, token endpoint, API) so the flood is answered by argon2, not by
the limiter. The per-email login limit stays at 5 per 15 minutes: the flood logs in
``--users`` distinct users, each at most 5 times. Everything is stopped and dropped at the end.

With ``--auth`` (and optionally ``--api``) it measures a running stack; that stack's own rules
apply (300 logins and registrations per IP), so expect 429s in the status mix.

Everything is on loopback and bounded in time (about 40 s with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing
import os
import platform
import secrets
import shutil
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from functools import partial
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

from bulwark.devstack.cli import repo_root
from bulwark.devstack.databases import create_databases, drop_databases, unique_names
from bulwark.devstack.embedded import EmbeddedPostgres, EmbeddedRedis
from bulwark.devstack.net import free_port, http_ok
from bulwark.devstack.rules import packaged_rules_with_raised_limits
from bulwark.devstack.stack import Stack, StackConfig, bulwark_services

PASSWORD = "Correct-Horse-9!"  # noqa: S105 - the bench users' password, by design
LOGINS_PER_USER = 5  # the per-email login limit (5 per 15 minutes)
HEADERS = {"X-App-Version": "1.0.0", "X-Platform": "ios"}


@dataclass(frozen=True)
class Target:
    """Where the stack under test listens, and a line saying what it is."""

    auth_url: str
    api_url: str | None
    description: str
    #: Every API process's base URL (``own_stack(api_processes=N)``), the first is ``api_url``.
    api_urls: tuple[str, ...] = ()
    #: The folder of the services' log files, for a stack of our own.
    logs: Path | None = None


@dataclass
class Series:
    """Latencies (milliseconds) and statuses of one endpoint in one phase."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def add(self, latency_ms: float, status: int) -> None:
        self.latencies.append(latency_ms)
        self.statuses[status] += 1


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100] of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# --- the stack ---------------------------------------------------------------------------


@contextlib.contextmanager
def own_stack(api_processes: int = 1) -> Iterator[Target]:
    """A fresh stack on free loopback ports; stopped, its databases dropped, on exit.

    ``api_processes`` API processes share its database and Redis, each on its own port (as
    replicas of one deployment on one machine).
    """
    work = repo_root() / ".bulwark" / "data" / f"bench-{secrets.token_hex(4)}"
    work.mkdir(parents=True)
    with ExitStack() as cleanup:
        cleanup.callback(shutil.rmtree, work, ignore_errors=True)
        database_url = os.environ.get("DATABASE_URL")
        redis_url = os.environ.get("REDIS_URL")
        servers = []
        if not database_url:
            database_url = cleanup.enter_context(EmbeddedPostgres(work / "postgres")).url
            servers.append("embedded Postgres")
        if not redis_url:
            redis_url = cleanup.enter_context(EmbeddedRedis(work / "redis")).url
            servers.append("embedded Redis")
        names = unique_names(f"bench{secrets.token_hex(3)}")
        urls = asyncio.run(create_databases(database_url, names.values()))
        cleanup.callback(lambda: asyncio.run(drop_databases(database_url, names.values())))
        rules = work / "rules.yaml"
        # Per-IP limits raised so the flood is answered by argon2, not by the limiter; the
        # per-email login limit and the backoff rules stay as shipped.
        rules.write_text(
            packaged_rules_with_raised_limits(
                keys=frozenset({"remote_address"}), domains=frozenset({"bulwark-api"})
            )
        )
        config = StackConfig(
            auth_database_url=urls[names["auth"]],
            api_database_url=urls[names["api"]],
            redis_url=redis_url,
            api_port=free_port(),
            auth_port=free_port(),
            ratelimit_port=free_port(),
            bulwark_env="development",
            keys_dir=work / "keys",
            redis_key_prefix=f"rl:bench:{secrets.token_hex(4)}:",
            ratelimit_rules=rules,
        )
        print("starting a stack ...", flush=True)
        services = bulwark_services(config)
        api = next(spec for spec in services if spec.name == "api")
        single = {name: value for name, value in api.env.items() if name != "METRICS_PORT"}
        ports = [free_port() for _ in range(api_processes - 1)]
        services += [
            replace(api, name=f"api-{n}", env={**single, "PORT": str(port)}, setup=(),
                    ready=partial(http_ok, f"http://127.0.0.1:{port}/readyz"))
            for n, port in enumerate(ports, start=2)
        ]  # fmt: skip
        cleanup.enter_context(Stack(services, work / "logs", stop_grace=5.0))
        where = " and ".join(servers) or "DATABASE_URL and REDIS_URL"
        yield Target(
            config.auth_url,
            config.api_url,
            f"own stack on 127.0.0.1 (Postgres/Redis: {where}; per-IP limits raised)",
            (config.api_url, *(f"http://127.0.0.1:{port}" for port in ports)),
            work / "logs",
        )


# --- clients -----------------------------------------------------------------------------


def _client(base_url: str, device_id: str | None = None, **kwargs: object) -> httpx.AsyncClient:
    """A client sending the mobile headers of one device (a new one unless ``device_id``)."""
    headers = {**HEADERS, "X-Device-Id": device_id or str(uuid.uuid4())}
    return httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30.0, **kwargs)  # type: ignore[arg-type]


async def register_users(auth_url: str, count: int, concurrency: int = 8) -> list[str]:
    """Register up to ``count`` users; return their emails (fewer when the limiter says 429)."""
    emails: list[str] = []
    limited = asyncio.Event()
    pending = deque(f"bench-{secrets.token_hex(6)}@example.com" for _ in range(count))
    async with _client(auth_url) as client:

        async def worker() -> None:
            while pending and not limited.is_set():
                email = pending.popleft()
                body = {"email": email, "password": PASSWORD, "displayName": "Bench"}
                response = await client.post("/v1/users", json=body)
                if response.status_code == 429:
                    limited.set()
                elif response.status_code == 201:
                    emails.append(email)
                else:
                    raise RuntimeError(f"registration: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if limited.is_set():
        print(f"  registration was rate-limited after {len(emails)} users", flush=True)
    return emails


async def login(client: httpx.AsyncClient, email: str) -> dict[str, str]:
    body = {"email": email, "password": PASSWORD, "device": "bench"}
    response = await client.post("/v1/auth/login", json=body)
    response.raise_for_status()
    tokens: dict[str, str] = response.json()
    return tokens


# --- the flood (child process) -----------------------------------------------------------

LoginRecord = tuple[float, int, float]  # (time.monotonic() at the answer, status, latency ms)
FloodResult = tuple[list[LoginRecord], bool]  # the records, and whether the users ran out


def flood_main(
    auth_url: str, emails: list[str], clients: int, stop: Event, results: Queue[FloodResult]
) -> None:
    """Child process: ``clients`` concurrent login loops until ``stop``; puts the records
    (and whether the users ran out) on ``results``."""
    records: list[LoginRecord] = []
    # Each user at most LOGINS_PER_USER times, its logins spread over the run.
    pending = deque(email for _ in range(LOGINS_PER_USER) for email in emails)

    async def run() -> None:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with _client(auth_url, limits=limits) as client:

            async def worker() -> None:
                while pending and not stop.is_set():
                    body = {"email": pending.popleft(), "password": PASSWORD, "device": "flood"}
                    started = time.perf_counter()
                    response = await client.post("/v1/auth/login", json=body)
                    latency = (time.perf_counter() - started) * 1000
                    records.append((time.monotonic(), response.status_code, latency))

            await asyncio.gather(*(worker() for _ in range(clients)))

    asyncio.run(run())
    results.put((records, not pending))


# --- the probes --------------------------------------------------------------------------


async def probe(
    send: Callable[[], Awaitable[httpx.Response]], series: Series, until: float, interval: float
) -> None:
    """Call ``send`` every ``interval`` seconds (or at once when behind) until ``until``."""
    next_at = time.monotonic()
    while (now := time.monotonic()) < until:
        if now < next_at:
            await asyncio.sleep(next_at - now)
        started = time.perf_counter()
        response = await send()
        series.add((time.perf_counter() - started) * 1000, response.status_code)
        next_at = max(next_at + interval, time.monotonic())


class Probes:
    """The three probed endpoints, each on its own keep-alive connection."""

    def __init__(self, target: Target, tokens: dict[str, str], device_id: str) -> None:
        # One device throughout: the session is bound to the device that logged in.
        self.jwks = _client(target.auth_url, device_id)
        self.token = _client(target.auth_url, device_id)
        self.api = _client(target.api_url, device_id) if target.api_url else None
        self.refresh_token = tokens["refresh_token"]
        self.bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    async def get_jwks(self) -> httpx.Response:
        return await self.jwks.get("/.well-known/jwks.json")

    async def refresh(self) -> httpx.Response:
        data = {"grant_type": "refresh_token", "refresh_token": self.refresh_token}
        response = await self.token.post("/oauth2/token", data=data)
        if response.status_code == 200:  # rotated: the next probe uses the new token
            self.refresh_token = response.json().get("refresh_token", self.refresh_token)
        return response

    async def get_me(self) -> httpx.Response:
        assert self.api is not None
        return await self.api.get("/v1/me", headers=self.bearer)

    def endpoints(self) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
        named: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
            "GET /.well-known/jwks.json (auth)": self.get_jwks,
            "POST /oauth2/token refresh (auth)": self.refresh,
        }
        if self.api is not None:
            named["GET /v1/me (api)"] = self.get_me
        return named

    async def run(self, seconds: float, interval: float) -> dict[str, Series]:
        """Probe every endpoint concurrently for ``seconds``."""
        until = time.monotonic() + seconds
        results = {name: Series() for name in self.endpoints()}
        await asyncio.gather(
            *(
                probe(send, results[name], until, interval)
                for name, send in self.endpoints().items()
            )
        )
        return results

    async def aclose(self) -> None:
        for client in (self.jwks, self.token, self.api):
            if client is not None:
                await client.aclose()


# --- the run -----------------------------------------------------------------------------


@dataclass
class Report:
    """Everything one run measured."""

    idle: dict[str, Series]
    flood: dict[str, Series]
    logins: Series
    login_seconds: float
    users: int
    users_ran_out: bool
    load_before: str


async def measure(target: Target, args: argparse.Namespace) -> Report:
    """Register users, probe with no load, then probe under the login flood."""
    load_before = load_average()
    print(f"registering {args.users} users ...", flush=True)
    emails = await register_users(target.auth_url, args.users + 1)
    if len(emails) < 2:
        raise SystemExit("bench: could not register users (rate-limited?)")
    device_id = str(uuid.uuid4())
    async with _client(target.auth_url, device_id) as client:
        probes = Probes(target, await login(client, emails.pop()), device_id)
    interval = args.interval_ms / 1000
    try:
        await probes.run(1.0, interval)  # warm connections and the API's JWKS cache
        print(f"idle: probing for {args.duration:.0f} s ...", flush=True)
        idle = await probes.run(args.duration, interval)

        print(
            f"flood: {args.login_clients} login clients, {args.warmup:.0f} s warm-up, "
            f"then probing for {args.duration:.0f} s ...",
            flush=True,
        )
        context = multiprocessing.get_context("spawn")
        stop = context.Event()
        results: Queue[FloodResult] = context.Queue()
        flood = context.Process(
            target=flood_main,
            args=(target.auth_url, emails, args.login_clients, stop, results),
            daemon=True,
        )
        flood.start()
        try:
            await asyncio.sleep(args.warmup)
            window_start = time.monotonic()
            busy = await probes.run(args.duration, interval)
            window_end = time.monotonic()
        finally:
            stop.set()
        records, ran_out = await asyncio.to_thread(results.get, True, 60.0)
        await asyncio.to_thread(flood.join, 30.0)
    finally:
        await probes.aclose()
    logins = Series()
    for answered_at, status, latency in records:
        if window_start <= answered_at <= window_end:
            logins.add(latency, status)
    return Report(idle, busy, logins, window_end - window_start, len(emails), ran_out, load_before)


def machine() -> str:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs ({model}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def load_average() -> str:
    """The 1-minute load average: other work on the machine shows in the figures."""
    try:
        return f"{os.getloadavg()[0]:.2f}"
    except OSError:
        return "unknown"


def print_report(report: Report, target: Target, args: argparse.Namespace) -> None:
    def row(name: str, phase: str, series: Series) -> str:
        values = series.latencies
        ok = sum(n for status, n in series.statuses.items() if 200 <= status < 300)
        figures = (
            "".join(f"{percentile(values, p):>9.1f}" for p in (50, 90, 99))
            + f"{max(values, default=math.nan):>9.1f}"
        )
        return f"{name:<36}{phase:<7}{len(values):>6}{ok / max(1, len(values)):>6.0%}{figures}"

    logins = report.logins
    rate = len(logins.latencies) / report.login_seconds if report.login_seconds else 0
    print()
    print(f"machine: {machine()}")
    print(f"load:    1-minute load average {report.load_before} before, {load_average()} after")
    print(f"target:  {target.description}")
    print(
        f"probes:  one request every {args.interval_ms} ms per endpoint, "
        f"{args.duration:.0f} s per phase"
    )
    print(
        f"flood:   {args.login_clients} login clients, {report.users} users; during the flood "
        f"window {len(logins.latencies)} logins ({rate:.1f}/s), statuses "
        f"{dict(sorted(logins.statuses.items()))}, login latency p50 "
        f"{percentile(logins.latencies, 50):.0f} ms, p99 {percentile(logins.latencies, 99):.0f} ms"
    )
    if report.users_ran_out:
        print("WARNING: the flood ran out of users before the window ended; raise --users")
    print()
    print(
        f"{'endpoint':<36}{'phase':<7}{'n':>6}{'2xx':>6}{'p50 ms':>9}{'p90 ms':>9}"
        f"{'p99 ms':>9}{'max ms':>9}"
    )
    for name in report.idle:
        print(row(name, "idle", report.idle[name]))
        print(row(name, "flood", report.flood[name]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--auth", help="auth service URL of a running stack (else: own stack)")
    parser.add_argument("--api", help="resource API URL of a running stack (with --auth)")
    parser.add_argument("--login-clients", type=int, default=24, help="concurrent login loops")
    parser.add_argument("--users", type=int, default=400, help="users the flood logs in")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds probed per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="flood seconds before probing")
    parser.add_argument("--interval-ms", type=int, default=20, help="pause between probe calls")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.api and not args.auth:
        build_parser().error("--api needs --auth")
    for host in filter(None, (args.auth, args.api)):
        if httpx.URL(host).host not in {"127.0.0.1", "localhost", "::1"}:
            build_parser().error("the benchmark runs against loopback only")
    with ExitStack() as cleanup:
        if args.auth:
            target = Target(
                args.auth.rstrip("/"),
                args.api.rstrip("/") if args.api else None,
                "running stack (its own rate-limit rules apply)",
            )
        else:
            target = cleanup.enter_context(own_stack())
        started = time.monotonic()
        report = asyncio.run(measure(target, args))
        print_report(report, target, args)
        print(f"\nmeasured in {time.monotonic() - started:.0f} s; stopping ...", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
