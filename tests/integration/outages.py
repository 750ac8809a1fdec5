"""Helpers of the outage tests: traffic in the background, timed calls, waiting for recovery."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from bulwark.devstack.embedded import EmbeddedPostgres
from bulwark.devstack.net import free_port

# What a request may cost beyond the rate-limit deadline (HTTP round trip, a database
# statement; no argon2, which comes after the limit on login).
SLACK = 1.0
RECOVERY_SECONDS = 10.0
REDIS_SERVER = shutil.which("redis-server")


class Traffic(threading.Thread):
    """``GET /v1/me`` in a loop until stopped; records (status, seconds) of each answer."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.url, self.headers = url, headers
        self.answers: list[tuple[int, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.done.is_set():
                started = time.monotonic()
                status = client.get(self.url, headers=self.headers).status_code
                self.answers.append((status, time.monotonic() - started))


class TimedTraffic(Traffic):
    """`Traffic` recording (monotonic start time, status) of each call instead."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers)
        self.answers_started: list[tuple[float, int]] = []

    def run(self) -> None:
        with httpx.Client(timeout=5.0) as client:
            while not self.done.is_set():
                started = time.monotonic()
                status = client.get(self.url, headers=self.headers).status_code
                self.answers_started.append((started, status))


def timed(call: object) -> tuple[httpx.Response, float]:
    """``call()`` and the seconds it took."""
    assert callable(call)
    started = time.monotonic()
    response = call()
    assert isinstance(response, httpx.Response)
    return response, time.monotonic() - started


def eventually(
    call: Callable[[], httpx.Response], done: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """Repeat ``call`` until ``done`` says yes of its answer, for at most RECOVERY_SECONDS;
    return the last answer."""
    give_up = time.monotonic() + RECOVERY_SECONDS
    while True:
        response = call()
        if done(response) or time.monotonic() > give_up:
            return response
        time.sleep(0.2)


class ThrowawayRedis:
    """A ``redis-server`` process on a fixed loopback port that writes nothing by itself; it
    keeps a snapshot only when told to (`snapshot`), and loads it only when restarted with
    ``from_snapshot`` (as a Redis with persistence comes back after a crash)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="throwaway-redis-"))

    def start(self, *, from_snapshot: bool = False) -> None:
        assert REDIS_SERVER is not None
        if not from_snapshot:
            (self._dir / "dump.rdb").unlink(missing_ok=True)
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += ["--dir", str(self._dir), "--dbfilename", "dump.rdb"]
        self.process = subprocess.Popen(  # noqa: S603 - fixed command
            [REDIS_SERVER, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        give_up = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.05)
        client.close()

    def snapshot(self) -> None:
        """Write the data set to disk now (``SAVE``)."""
        with redis.Redis(port=self.port) as client:
            client.save()

    def crash(self) -> None:
        """SIGKILL: no shutdown, nothing saved."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=5)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=5)
            self.process = None


def server_pids(server: EmbeddedPostgres) -> list[int]:
    """The postmaster and its children (every backend), read from /proc."""
    postmaster = int((server.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == postmaster:
                pids.append(int(entry.name))
    return pids


def stall(server: EmbeddedPostgres) -> None:
    for pid in server_pids(server):
        os.kill(pid, signal.SIGSTOP)


def resume(server: EmbeddedPostgres) -> None:
    try:
        pids = server_pids(server)
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
