"""Rate-limit decisions per second and latency, beside the ceiling of Redis running the script.

For each number of concurrent clients (``--clients``, default 1, 16 and 64) it measures, in one
run:

- **service**: ``ShouldRateLimit`` calls through `RateLimitClient` (the client the HTTP
  services use) against a real ``bulwark-ratelimit`` process, for ``--seconds`` each after a
  short warm-up; decisions per second and the client-side p50/p99/p99.9 latency. Each call
  has one descriptor, a per-IP bucket drawn from ``--keys`` values, with a limit high enough
  that calls are admitted (the admitting path, which writes, is the dearer one).
- **redis**: ``redis-benchmark`` running ``EVALSHA`` of the service's own script (loaded with
  ``SCRIPT LOAD``) with the same key shape and arguments, at the same concurrency: the ceiling
  that Redis itself puts on the service.

Then, **at a fixed arrival rate** (``--rates``, requests per second, default 250, 500 and
1000): calls sent open-loop on a Poisson schedule, whatever the answers, for ``--seconds``
each; latency counted from each call's scheduled time, so a stall is charged to every call it
delays (no coordinated omission). This is the figure to hold against Envoy's 20 ms budget:
"under load" at a stated rate, not past saturation, where closed-loop latency is only
``clients / throughput``.

By default it starts its own ``redis-server`` on a free loopback port (no persistence) and one
service process with ``LOG_LEVEL=WARNING`` (no access line per call); ``--redis-url`` measures
another Redis (keys go under a random prefix and are deleted afterwards). Client and service
share the machine: the client's own CPU is part of the latency. About 30 s with the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import gc
import io
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import redis
import redis.asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.ratelimit.limiter import Hit, Limiter
from bulwark.ratelimit.rules import load_rules, redis_key

DOMAIN = "bench"
RULES = """
domains:
  - domain: bench
    descriptors:
      - key: remote_address
        rate_limit: {requests: 100000, window_seconds: 60}
"""
CHANNELS = 8  # client channels; workers share them round-robin


@dataclass
class Row:
    clients: int
    service_rps: float
    p50_ms: float
    p99_ms: float
    p999_ms: float
    errors: int
    redis_rps: float
    redis_p50_ms: float
    redis_p99_ms: float


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def own_redis() -> Iterator[str]:
    """A throwaway redis-server on a free loopback port."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("bench.ratelimit: redis-server not on PATH; pass --redis-url")
    port = free_port()
    process = subprocess.Popen(  # noqa: S603 - fixed arguments
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def service(redis_url: str, prefix: str, rules: Path) -> Iterator[int]:
    """One ``bulwark-ratelimit`` process on a free port; yields the port once SERVING."""
    port = free_port()
    env = {
        **os.environ,
        "BULWARK_ENV": "development",
        "PORT": str(port),
        "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": prefix,
        "RATELIMIT_RULES": str(rules),
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", "from bulwark.ratelimit.cli import main; main()"], env=env
    )
    try:
        asyncio.run(wait_serving(port))
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def wait_serving(port: int) -> None:
    deadline = time.monotonic() + 20
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.1)


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(int(fraction * len(sorted_values)), len(sorted_values) - 1)
    return sorted_values[index]


def _clients(ports: Sequence[int], count: int) -> list[RateLimitClient]:
    """``count`` clients spread round-robin over the replicas on ``ports``."""
    return [
        RateLimitClient(f"127.0.0.1:{ports[i % len(ports)]}", DOMAIN, timeout_seconds=1.0)
        for i in range(count)
    ]


async def load(
    ports: Sequence[int], clients: int, seconds: float, keys: int
) -> tuple[float, list[float], int]:
    """``clients`` workers calling back to back for ``seconds`` (after a 0.5 s warm-up)."""
    channels = _clients(ports, max(min(clients, CHANNELS), len(ports)))
    latencies: list[float] = []
    errors = 0
    measuring = False
    start = time.monotonic()
    warm_until = start + 0.5
    stop = warm_until + seconds

    async def worker(index: int) -> None:
        nonlocal errors, measuring
        client = channels[index % len(channels)]
        n = index
        while (now := time.perf_counter()) and time.monotonic() < stop:
            n += clients
            ip = f"10.{(n % keys) // 65536}.{(n % keys) // 256 % 256}.{n % 256}"
            try:
                await client.should_rate_limit([[("remote_address", ip)]])
            except Exception:  # noqa: BLE001 - counted, the benchmark goes on
                errors += 1
                continue
            if time.monotonic() >= warm_until:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*(worker(i) for i in range(clients)))
    for client in channels:
        await client.close()
    return len(latencies) / seconds, sorted(latencies), errors


async def script_call(redis_url: str, prefix: str) -> tuple[str, list[str], list[str]]:
    """The service's script, its SHA and one call's (keys, args), captured from `Limiter`."""
    client = redis.asyncio.Redis.from_url(redis_url)
    limiter = Limiter(client, timeout_seconds=1.0)
    captured: dict[str, Any] = {}

    async def capture(keys: list[str], args: list[Any]) -> list[int]:
        captured.update(keys=keys, args=args)
        return [0, 0, 0]

    script = limiter._script
    limiter._script = capture  # type: ignore[assignment]
    match = load_rules(_rules_file(prefix)).resolve(DOMAIN, [("remote_address", "x")])
    assert match is not None
    key = redis_key(prefix, DOMAIN, [("remote_address", "x")])
    hit = Hit(key, match.policy.limit, 1, match.policy)
    await limiter.hit([hit])
    sha = str(await client.script_load(script.script))
    await client.aclose()
    return sha, [str(k) for k in captured["keys"]], [str(a) for a in captured["args"]]


def _rules_file(prefix: str) -> Path:
    name = prefix.strip(":").replace(":", "-")
    path = Path(tempfile.gettempdir()) / f"bench-ratelimit-{name}.yaml"
    path.write_text(RULES)
    return path


def redis_benchmark(
    redis_url: str, sha: str, key: str, args: list[str], *, clients: int, requests: int, keys: int
) -> tuple[float, float, float, str]:
    """``redis-benchmark ... EVALSHA sha 1 key args`` at ``clients``; (rps, p50, p99, command)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return float("nan"), float("nan"), float("nan"), "redis-benchmark not on PATH"
    parsed = redis.connection.parse_url(redis_url)
    # Spread the calls over `keys` buckets, as the service run does; the digest stays a tag.
    rand_key = key.replace(key[key.index("{") + 1 : key.index("}")], "__rand_int__")
    command = [
        binary,
        "-h",
        str(parsed.get("host", "127.0.0.1")),
        "-p",
        str(parsed.get("port", 6379)),
        "-n",
        str(requests),
        "-c",
        str(clients),
        "-r",
        str(keys),
        "--csv",
        "EVALSHA",
        sha,
        "1",
        rand_key,
        *args,
    ]
    output = subprocess.run(  # noqa: S603 - fixed arguments
        command, capture_output=True, text=True, check=True, timeout=300
    ).stdout
    rows = list(csv.reader(io.StringIO(output)))
    header, values = rows[0], rows[-1]
    field = dict(zip(header, values, strict=False))
    shown = " ".join(command[1:]).replace(sha, "<sha>")
    return (
        float(field["rps"]),
        float(field.get("p50_latency_ms", "nan")),
        float(field.get("p99_latency_ms", "nan")),
        f"redis-benchmark {shown}",
    )


async def open_loop(
    ports: Sequence[int], rate: float, seconds: float, keys: int
) -> tuple[list[float], int]:
    """Calls at ``rate`` per second (Poisson arrivals) for ``seconds``; returns the sorted
    latencies from each call's scheduled start (seconds) and the error count."""
    channels = _clients(ports, CHANNELS)
    latencies: list[float] = []
    errors = 0
    rng = random.Random(7)

    async def call(n: int, scheduled: float) -> None:
        nonlocal errors
        ip = f"10.{(n % keys) // 65536}.{(n % keys) // 256 % 256}.{n % 256}"
        try:
            await channels[n % CHANNELS].should_rate_limit([[("remote_address", ip)]])
        except Exception:  # noqa: BLE001 - counted, the benchmark goes on
            errors += 1
            return
        latencies.append(time.perf_counter() - scheduled)

    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter() + 0.1
    scheduled, n = start, 0
    while scheduled < start + seconds:
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(call(n, scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
        scheduled += rng.expovariate(rate)
    await asyncio.gather(*tasks)
    for client in channels:
        await client.close()
    return sorted(latencies), errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.ratelimit",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument(
        "--rates", type=float, nargs="*", default=[250, 500, 1000], help="open-loop calls/s"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    parser.add_argument("--keys", type=int, default=10_000, help="distinct buckets")
    parser.add_argument("--requests", type=int, default=100_000, help="per redis-benchmark run")
    parser.add_argument("--redis-url", help="measure this Redis instead of starting one")
    parser.add_argument(
        "--replicas", type=int, default=1, help="service processes, clients spread over them"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures; returns the exit status."""
    args = build_parser().parse_args(argv)
    # The load generator's own collector pauses would be charged to the service (Envoy, the
    # real caller, has none): collect only between phases.
    gc.disable()
    prefix = f"rl:bench:{secrets.token_hex(4)}:"
    rows: list[Row] = []
    command = ""
    with contextlib.ExitStack() as stack:
        url = args.redis_url or stack.enter_context(own_redis())
        rules = _rules_file(prefix)
        stack.callback(rules.unlink, missing_ok=True)
        stack.callback(_delete_keys, url, prefix)
        ports = [stack.enter_context(service(url, prefix, rules)) for _ in range(args.replicas)]
        sha, keys, script_args = asyncio.run(script_call(url, prefix))
        for clients in args.clients:
            gc.collect()
            rps, latencies, errors = asyncio.run(load(ports, clients, args.seconds, args.keys))
            r_rps, r_p50, r_p99, command = redis_benchmark(
                url,
                sha,
                keys[0],
                script_args,
                clients=clients,
                requests=args.requests,
                keys=args.keys,
            )
            rows.append(
                Row(
                    clients,
                    rps,
                    percentile(latencies, 0.5) * 1000,
                    percentile(latencies, 0.99) * 1000,
                    percentile(latencies, 0.999) * 1000,
                    errors,
                    r_rps,
                    r_p50,
                    r_p99,
                )
            )
            print(f"clients={clients}: done", file=sys.stderr, flush=True)
        fixed_rate = []
        for rate in args.rates:
            gc.collect()
            latencies, errors = asyncio.run(open_loop(ports, rate, args.seconds, args.keys))
            fixed_rate.append((rate, latencies, errors))
            print(f"rate={rate:g}/s: done", file=sys.stderr, flush=True)
    print_report(rows, command, args)
    print_rates(fixed_rate, args)
    return 0


def _delete_keys(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
    finally:
        client.close()


def print_rates(results: list[tuple[float, list[float], int]], args: argparse.Namespace) -> None:
    if not results:
        return
    print(f"\nopen loop (Poisson arrivals), {args.seconds:g} s per rate, from scheduled time\n")
    print("| calls/s offered | answered | p50 ms | p99 ms | p99.9 ms | max ms | errors |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for rate, latencies, errors in results:
        ms = [percentile(latencies, f) * 1000 for f in (0.5, 0.99, 0.999)]
        worst = latencies[-1] * 1000 if latencies else float("nan")
        print(
            f"| {rate:,.0f} | {len(latencies):,} | {ms[0]:.2f} | {ms[1]:.2f} | {ms[2]:.2f} "
            f"| {worst:.2f} | {errors} |"
        )


def print_report(rows: list[Row], command: str, args: argparse.Namespace) -> None:
    print(
        f"\nbench.ratelimit on {platform.node()} ({os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}), "
        f"{args.seconds:g} s per level, {args.keys} buckets, {args.replicas} service process(es)\n"
    )
    print(
        "| clients | service decisions/s | p50 ms | p99 ms | p99.9 ms | errors "
        "| redis EVALSHA/s | redis p50 ms | redis p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r.clients} | {r.service_rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} "
            f"| {r.p999_ms:.2f} | {r.errors} | {r.redis_rps:,.0f} | {r.redis_p50_ms:.3f} "
            f"| {r.redis_p99_ms:.3f} |"
        )
    print(f"\nredis ceiling measured with (last level):\n  {command}")
