"""``bulwark-dev run`` (what ``make run`` runs), as a process with the real services.

One run per module, on ports given the way the README gives them: every port moves, metrics
included; its SMTP sink is up, named in the banner, given to auth as SMTP_URL, and what it
receives is listed by ``bulwark-dev mail``; ``bulwark-dev demo`` finds it; a service killed
with SIGKILL is restarted while the others keep answering; a second run in the same checkout
names the first and stops; and, last, a runner killed with SIGKILL takes its services with
it. The tests run in file order.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from bulwark.devstack.databases import drop_databases, unique_names
from bulwark.devstack.net import free_port, http_ok, port_free
from bulwark.devstack.ports import DEFAULT_METRICS_PORTS
from bulwark.devstack.procs import pid_alive
from bulwark.devstack.runstate import RunFile, RunState
from bulwark.devstack.stack import console_script

START_TIMEOUT = 90.0  # three services one after the other, on a busy machine
SERVICES = ("api", "auth", "ratelimit")


@dataclass
class Run:
    """A running ``bulwark-dev run``: its process, its checkout folder and its output."""

    proc: subprocess.Popen[bytes]
    cwd: Path
    output: Path
    ports: dict[str, int]

    @property
    def run_file(self) -> RunFile:
        return RunFile(self.cwd / ".bulwark" / "run" / "stack.json")

    def state(self) -> RunState:
        state = self.run_file.read()
        assert state is not None, f"no {self.run_file.path}\n{self.out()[-6000:]}"
        return state

    def out(self) -> str:
        return self.output.read_text(errors="replace")


def _distinct_free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def _wait_up(run: Run) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while "Bulwark is up" not in run.out():
        assert run.proc.poll() is None, f"bulwark-dev run exited:\n{run.out()[-6000:]}"
        assert time.monotonic() < deadline, f"not up in {START_TIMEOUT} s:\n{run.out()[-6000:]}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def run(
    database_server_url: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Run]:
    """``bulwark-dev run --api-port A --auth-port B --ratelimit-port C`` in a folder of its own
    (its ``.bulwark``), on the test servers, with databases of its own. Whatever happens, its
    processes are gone and its databases dropped at the end."""
    cwd = tmp_path_factory.mktemp("devstack-run")
    suffix = "t" + secrets.token_hex(4)
    ports = dict(zip(SERVICES, _distinct_free_ports(3), strict=True))
    flags = [arg for name in SERVICES for arg in (f"--{name}-port", str(ports[name]))]
    output = cwd / "run.out"
    with output.open("wb") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own console script
            [console_script("bulwark-dev"), "run", *flags, "--database-suffix", suffix],
            cwd=cwd,
            env={
                **{k: v for k, v in os.environ.items() if k != "SMTP_URL"},  # so: a sink
                "DATABASE_URL": database_server_url,
                "REDIS_URL": redis_url,
            },
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = Run(proc, cwd, output, ports)
    try:
        _wait_up(started)
        yield started
    finally:
        recorded = started.run_file.read()
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for record in recorded.services.values() if recorded else []:
            if pid_alive(record.pid):
                os.killpg(record.pid, signal.SIGKILL)
        asyncio.run(drop_databases(database_server_url, unique_names(suffix).values()))


def test_port_flags_move_every_port_metrics_included(run: Run) -> None:
    state = run.state()
    assert {name: state.services[name].port for name in SERVICES} == run.ports
    metrics = {name: state.services[name].metrics_port for name in SERVICES}
    assert not set(metrics.values()) & set(DEFAULT_METRICS_PORTS.values()), metrics
    assert len({*metrics.values(), *run.ports.values()}) == 6
    for name in SERVICES:
        url = state.services[name].metrics_url
        assert url is not None
        assert url in run.out()  # printed
        response = httpx.get(url, timeout=5)
        assert response.status_code == 200
        assert "# TYPE" in response.text
    for name in ("api", "auth"):
        assert http_ok(f"{state.address(name)}/readyz")


def _environ(pid: int) -> list[bytes]:
    return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")


@pytest.mark.timeout(60)
def test_the_smtp_sink_is_up_auth_has_its_url_and_bulwark_dev_mail_lists(run: Run) -> None:
    state = run.state()
    assert state.smtp_url is not None
    assert state.mail_folder == str(run.cwd / ".bulwark" / "mail")
    assert f"mail       {state.smtp_url}" in run.out()  # the banner
    assert "bulwark-dev mail" in run.out()
    assert f"SMTP_URL={state.smtp_url}".encode() in _environ(state.services["auth"].pid)
    for other in ("api", "ratelimit"):
        assert not [v for v in _environ(state.services[other].pid) if v.startswith(b"SMTP_")]
    url = urlsplit(state.smtp_url)
    assert (url.scheme, url.hostname) == ("smtp", "127.0.0.1")
    assert url.port is not None
    message = EmailMessage()
    message["From"] = "Bulwark <no-reply@bulwark.localhost>"
    message["To"] = "someone@example.com"
    message["Subject"] = "Hello from the devstack test"
    message.set_content("It arrived.")
    with smtplib.SMTP(url.hostname, url.port, timeout=10) as client:
        client.send_message(message)
    listed = subprocess.run(  # noqa: S603 - our own console script
        [console_script("bulwark-dev"), "mail"],
        cwd=run.cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "someone@example.com" in listed.stdout
    assert "Hello from the devstack test" in listed.stdout


@pytest.mark.timeout(60)
def test_demo_finds_the_running_stack(run: Run) -> None:
    demo = subprocess.run(  # noqa: S603 - our own console script
        [console_script("bulwark-dev"), "demo"],
        cwd=run.cwd,
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert f"api http://127.0.0.1:{run.ports['api']}" in demo.stdout
    assert "demo: all steps as expected" in demo.stdout


@pytest.mark.timeout(90)
def test_a_killed_service_is_restarted_while_the_others_serve(run: Run) -> None:
    before = run.state()
    api, auth = before.services["api"], before.services["auth"]
    os.kill(api.pid, signal.SIGKILL)
    auth_answers: list[bool] = []
    deadline = time.monotonic() + 60
    while not (
        run.state().services["api"].pid not in (0, api.pid) and http_ok(f"{api.address}/healthz")
    ):
        assert time.monotonic() < deadline, f"api not back:\n{run.out()[-6000:]}"
        auth_answers.append(http_ok(f"{auth.address}/healthz"))
        time.sleep(0.2)
    assert all(auth_answers)
    after = run.state()
    assert after.services["auth"].pid == auth.pid
    assert after.services["ratelimit"].pid == before.services["ratelimit"].pid
    assert "api exited with code -9" in run.out()
    response = httpx.get(f"{api.address}/readyz", timeout=5)
    assert response.status_code == 200


@pytest.mark.timeout(60)
def test_a_second_run_names_the_first_and_stops(run: Run) -> None:
    state = run.state()
    second = subprocess.Popen(  # noqa: S603 - our own console script
        [console_script("bulwark-dev"), "run", "--free-ports"],
        cwd=run.cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = second.communicate(timeout=30)
    finally:
        if second.poll() is None:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait()
    assert second.returncode == 1, output
    assert f"runner     pid {state.runner_pid}" in output
    api = state.services["api"]
    assert f"api        pid {api.pid}  port {api.port}" in output
    assert "make stop" in output
    assert run.proc.poll() is None  # the first one is left alone


@pytest.mark.timeout(60)
def test_services_die_with_a_runner_killed_by_sigkill(run: Run) -> None:
    state = run.state()
    run.proc.kill()
    run.proc.wait()
    pids = [record.pid for record in state.services.values()]
    deadline = time.monotonic() + 5
    while any(pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in pids if pid_alive(pid)], "services outlived their runner"
    taken = [port for port in run.ports.values() if not port_free("127.0.0.1", port)]
    assert not taken, taken
    stop = subprocess.run(  # noqa: S603 - our own console script
        [console_script("bulwark-dev"), "stop"],
        cwd=run.cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "no bulwark-dev run is alive" in stop.stdout
    assert not run.run_file.path.exists()
