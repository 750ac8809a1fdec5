"""``python -m bench.http``: requests/s of Bulwark's API beside a bare Litestar app, one run.

Issue 11's targets, each printed beside its measured figure:

- ``GET /healthz`` through Bulwark's full middleware (access line with redaction, tracing,
  metrics, request ids, admission control) at least 50 % of a bare Litestar app's
  ``GET /healthz`` (`bench.http.bare`, uvicorn with httptools and uvloop, as Bulwark);
- ``GET /v1/me`` (token verified, revoked-session check, rate limited) at least 50 % of
  Bulwark's own ``/healthz``; ``GET /v1/notes`` (one indexed query) at least 35 %.

It starts its own stack (`bench.login_flood.own_stack`: fresh databases, free loopback
ports, the API's limits raised so nothing is refused), registers a user, logs in, writes one
note, then runs wrk (``make wrk``) against each route in turn, ``--rounds`` times
interleaved, and keeps each route's best round (the machine is noisy; the best round is the
least disturbed). Any non-2xx answer is reported: a refused request is not a fast one.

Then the scale of the API: ``/healthz`` and ``/v1/me`` with one API process, and with two
(replicas of one deployment on this machine, each on its own port, both loaded at once by two
wrk runs of half the connections). Last, it counts in the API's log what must not happen at a
load the API is sized for: rate-limit decisions that fell to the failure mode
(``ratelimit_unavailable``, ``ratelimit_store_unavailable``), revocation checks that could not
be made (``revocation_check_unavailable``) and requests refused as overload (``overloaded``).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import httpx

from bench.login_flood import HEADERS, PASSWORD, own_stack
from bulwark.devstack.cli import repo_root
from bulwark.devstack.net import free_port
from bulwark.devstack.tools import fetched_tool

_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors: (.*)")
#: Events of the API's log that mean a request was not judged as it should be under load.
FAILURE_EVENTS = (
    "ratelimit_unavailable",
    "ratelimit_store_unavailable",
    "revocation_check_unavailable",
    "overloaded",
)


@dataclass
class Route:
    """One measured route: its name, URL and request headers, and the best round's figure."""

    name: str
    url: str
    headers: dict[str, str]
    best: float = 0.0
    refused: int = 0


def wrk_binary() -> str:
    """wrk from .bulwark/tools/bin (``make wrk``) or PATH (`fetched_tool`)."""
    found = fetched_tool("wrk")
    if found is None:
        sys.exit("bench.http: wrk not found; run `make wrk` (or install Debian's wrk)")
    return found


def run_wrk(wrk: str, route: Route, args: argparse.Namespace) -> tuple[float, int]:
    """One wrk run against ``route``: (requests/s, non-2xx answers and socket errors)."""
    command = [wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    for name, value in route.headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(  # noqa: S603 - our own arguments
        [*command, route.url],
        check=False,
        capture_output=True,
        text=True,
        timeout=args.duration + 30,
    ).stdout
    rate = _RATE.search(out)
    if rate is None:
        sys.exit(f"bench.http: wrk printed no rate for {route.url}:\n{out}")
    refused = int(m.group(1)) if (m := _NON_2XX.search(out)) else 0
    if _ERRORS.search(out):
        refused += 1  # connect/read/write/timeout errors: the line is printed below
        print(f"  {route.name}: {_ERRORS.search(out).group(0)}")  # type: ignore[union-attr]
    return float(rate.group(1)), refused


@contextmanager
def bare_app() -> Iterator[str]:
    """The bare Litestar app on a free loopback port; its base URL."""
    port = free_port()
    uvicorn = str(Path(sys.executable).parent / "uvicorn")
    process = subprocess.Popen(  # noqa: S603 - our own arguments
        [uvicorn, "bench.http.bare:app", "--port", str(port), "--http", "httptools",
         "--no-access-log", "--log-level", "warning"],
        cwd=repo_root(),
        env={**os.environ, "PYTHONPATH": str(repo_root())},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/healthz", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or process.poll() is not None:
                    sys.exit("bench.http: the bare app did not start")
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


def signed_in(auth_url: str, api_url: str) -> dict[str, str]:
    """Register a user, log in, write one note; the headers of an authenticated request."""
    device = {**HEADERS, "X-Device-Id": str(uuid.uuid4())}
    email = f"bench-{uuid.uuid4().hex[:12]}@example.com"
    account = {"email": email, "password": PASSWORD}
    with httpx.Client(headers=device, timeout=30) as client:
        registered = client.post(f"{auth_url}/v1/users", json={**account, "displayName": "B"})
        registered.raise_for_status()
        tokens = client.post(f"{auth_url}/v1/auth/login", json=account).raise_for_status().json()
        headers = {**device, "Authorization": f"Bearer {tokens['access_token']}"}
        client.post(f"{api_url}/v1/notes", json={"title": "bench"}, headers=headers)
        client.get(f"{api_url}/v1/notes", headers=headers).raise_for_status()
    return headers


def build_parser() -> argparse.ArgumentParser:
    """The command line: wrk's threads, connections and duration, and the rounds."""
    parser = argparse.ArgumentParser(prog="python -m bench.http", description=__doc__)
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (32)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    parser.add_argument("--duration", type=int, default=8, help="seconds per run (8)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table; 0 even when a target is missed (it prints figures)."""
    args = build_parser().parse_args(argv)
    wrk = wrk_binary()
    with own_stack(api_processes=2) as target, bare_app() as bare:
        assert target.api_url is not None
        auth = signed_in(target.auth_url, target.api_url)
        routes = [
            Route("bare Litestar GET /healthz", f"{bare}/healthz", {}),
            Route("Bulwark API GET /healthz", f"{target.api_url}/healthz", {}),
            Route("Bulwark API GET /v1/me", f"{target.api_url}/v1/me", auth),
            Route("Bulwark API GET /v1/notes", f"{target.api_url}/v1/notes", auth),
        ]
        for route in routes:  # warm-up: JIT-less, but caches, pools and connections fill
            run_wrk(wrk, route, _short(args))
        for _ in range(args.rounds):
            for route in routes:
                rate, refused = run_wrk(wrk, route, args)
                route.best = max(route.best, rate)
                route.refused += refused
        scale = [(route, scale_out(wrk, route, target.api_urls, args)) for route in routes[1:3]]
        assert target.logs is not None
        failures = count_events(target.logs, FAILURE_EVENTS)
    bare_rate, healthz, me, notes = (route.best for route in routes)
    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, best of "
        f"{args.rounds} interleaved rounds, {os.cpu_count()} CPUs, {target.description}\n"
    )
    print(f"| {'route':<28} | {'requests/s':>10} | {'non-2xx':>7} |")
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 9}|")
    for route in routes:
        print(f"| {route.name:<28} | {route.best:>10,.0f} | {route.refused:>7} |")
    print()
    for what, ratio, target_ratio in (
        ("/healthz vs bare Litestar", healthz / bare_rate, 0.50),
        ("/v1/me vs Bulwark /healthz", me / healthz, 0.50),
        ("/v1/notes vs Bulwark /healthz", notes / healthz, 0.35),
    ):
        verdict = "met" if ratio >= target_ratio else "MISSED"
        print(f"{what:<32} {ratio:6.1%}  (target {target_ratio:.0%}: {verdict})")
    print("\nAPI processes (replicas on this machine; requests/s, both loaded at once):\n")
    print(
        f"| {'route':<28} | {'1 process':>10} | {'2 processes':>11} | {'growth':>6} "
        f"| {'non-2xx':>7} |"
    )
    print(f"|{'-' * 30}|{'-' * 12}|{'-' * 13}|{'-' * 8}|{'-' * 9}|")
    for route, (one, two, refused) in scale:
        print(
            f"| {route.name:<28} | {one:>10,.0f} | {two:>11,.0f} | {two / one:>5.2f}x "
            f"| {refused:>7} |"
        )
    print("\nIn the API's log over the whole run (each must be 0 at the load it is sized for;")
    print("overloaded is written once per burst of refusals, the others once per request):")
    for event, count in failures.items():
        print(f"  {event:<30} {count}")
    return 0


def scale_out(
    wrk: str, route: Route, api_urls: tuple[str, ...], args: argparse.Namespace
) -> tuple[float, float, int]:
    """requests/s of ``route`` on the first API process alone, then on two at once (two wrk
    runs, half the connections each, summed); best of ``args.rounds`` each; and the non-2xx
    answers and socket errors of all those runs."""
    path = route.url.removeprefix(api_urls[0])
    alone = [run_wrk(wrk, route, args) for _ in range(args.rounds)]
    half = argparse.Namespace(**{**vars(args), "connections": max(1, args.connections // 2)})
    together: list[list[tuple[float, int]]] = []
    for _ in range(args.rounds):
        with ThreadPoolExecutor(max_workers=2) as pool:
            together.append(
                list(
                    pool.map(
                        lambda base: run_wrk(wrk, replace(route, url=f"{base}{path}"), half),
                        api_urls[:2],
                    )
                )
            )
    refused = sum(r for _, r in alone) + sum(r for runs in together for _, r in runs)
    best_two = max(sum(rate for rate, _ in runs) for runs in together)
    return max(rate for rate, _ in alone), best_two, refused


def count_events(logs: Path, events: tuple[str, ...]) -> dict[str, int]:
    """How many lines of the API processes' logs (``api*.log``) carry each event."""
    counts = dict.fromkeys(events, 0)
    for path in logs.glob("api*.log"):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line).get("event")
            except (ValueError, AttributeError):
                continue
            if event in counts:
                counts[event] += 1
    return counts


def _short(args: argparse.Namespace) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), "duration": 2})


if __name__ == "__main__":
    sys.exit(main())
