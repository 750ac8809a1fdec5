"""Helpers of the outage tests: traffic in the background, timed calls, waiting for recovery."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

# What a request may cost beyond the rate-limit deadline (HTTP round trip, a database
# statement; no argon2, which comes after the limit on login).
SLACK = 1.0
RECOVERY_SECONDS = 10.0


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
