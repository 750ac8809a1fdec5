"""The ``bulwark-ratelimit`` process: bad settings exit 2; serve on port 0; stop on SIGTERM."""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENTRY = ("-c", "from bulwark.ratelimit.cli import main; main()")


async def run_cli(environ: dict[str, str]) -> asyncio.subprocess.Process:
    env = {"PATH": os.environ.get("PATH", ""), **environ}
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *ENTRY,
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_invalid_settings_exit_2_with_one_line() -> None:
    process = await run_cli({"REDIS_URL": ""})
    stdout, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 2
    assert stderr.decode() == "bulwark-ratelimit: REDIS_URL must be set\n"
    assert stdout == b""


async def test_serves_on_port_0_and_stops_on_sigterm(
    redis_url: str, key_prefix: str, rules_path: Path
) -> None:
    process = await run_cli(
        {
            "REDIS_URL": redis_url,
            "PORT": "0",
            "REDIS_KEY_PREFIX": key_prefix,
            "RATELIMIT_RULES": str(rules_path),
        }
    )
    try:
        assert process.stdout is not None
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        assert line["event"] == "ratelimit_serving"
        assert line["port"] > 0
        async with grpc.aio.insecure_channel(f"127.0.0.1:{line['port']}") as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@pytest.mark.security(stride="D", asvs=("V15.2",))
async def test_sigterm_reports_not_serving_before_the_server_stops(
    redis_url: str, key_prefix: str, rules_path: Path
) -> None:
    """A health watcher (a load balancer, Kubernetes) hears NOT_SERVING on SIGTERM while the
    server still answers, then the process exits 0 (docs: graceful stop, as PID 1 too)."""
    process = await run_cli(
        {
            "REDIS_URL": redis_url,
            "PORT": "0",
            "REDIS_KEY_PREFIX": key_prefix,
            "RATELIMIT_RULES": str(rules_path),
        }
    )
    try:
        assert process.stdout is not None
        line = json.loads(await asyncio.wait_for(process.stdout.readline(), 10))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{line['port']}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(), timeout=15
            )
            first = await asyncio.wait_for(watch.read(), 5)
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            process.send_signal(signal.SIGTERM)
            second = await asyncio.wait_for(watch.read(), 5)
            assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
            watch.cancel()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
