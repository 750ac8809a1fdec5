"""The run-state file: what an earlier run left alive, named and stopped."""

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulwark.devstack.procs import pid_alive, process_start
from bulwark.devstack.runstate import (
    RunFile,
    RunState,
    ServiceRecord,
    leftover_message,
    stop_leftovers,
)


def _record(pid: int, port: int, started: str | None = None) -> ServiceRecord:
    return ServiceRecord(
        pid=pid,
        started=started if started is not None else process_start(pid),
        port=port,
        address=f"http://127.0.0.1:{port}",
        metrics_port=port + 1000,
        metrics_url=f"http://127.0.0.1:{port + 1000}/metrics",
    )


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes that stand in for an earlier run's; killed at the end whatever happens."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _sleep(sleepers: list[subprocess.Popen[bytes]]) -> int:
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)  # noqa: S607
    sleepers.append(proc)
    return proc.pid


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])  # noqa: S607
    proc.wait()
    return proc.pid


def test_the_file_round_trips_and_is_removed_only_by_its_runner(tmp_path: Path) -> None:
    run_file = RunFile(tmp_path / "run" / "stack.json")
    assert run_file.read() is None
    state = RunState(4711, "99", {"api": _record(4712, 8000, started="100")})
    run_file.write(state)
    assert run_file.read() == state
    assert state.address("api") == "http://127.0.0.1:8000"
    run_file.remove(runner_pid=1)
    assert run_file.path.exists()
    run_file.remove(runner_pid=4711)
    assert not run_file.path.exists()


def test_the_smtp_sink_is_recorded_when_the_run_has_one(tmp_path: Path) -> None:
    run_file = RunFile(tmp_path / "stack.json")
    services = {"api": _record(4712, 8000, started="100")}
    with_sink = RunState(4711, "99", services, "smtp://127.0.0.1:10025", "/x/.bulwark/mail")
    run_file.write(with_sink)
    assert run_file.read() == with_sink
    assert '"smtp_url": "smtp://127.0.0.1:10025"' in run_file.path.read_text()
    without = RunState(4711, "99", services)
    run_file.write(without)
    assert '"mail"' not in run_file.path.read_text()
    read = run_file.read()
    assert read is not None
    assert read.smtp_url is None


def test_leftovers_are_the_live_processes_of_the_recorded_run(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    runner, api, reused = _sleep(sleepers), _sleep(sleepers), _sleep(sleepers)
    run_file = RunFile(tmp_path / "stack.json")
    state = RunState(
        runner,
        process_start(runner),
        {
            "api": _record(api, 8000),
            "auth": _record(_dead_pid(), 8001),
            # A live pid with another start time: a later program that got the pid, not ours.
            "ratelimit": _record(reused, 50051, started="1"),
        },
    )
    run_file.write(state)
    leftovers = run_file.leftovers()
    if process_start(reused) is None:  # no /proc: a live pid is believed
        leftovers = [left for left in leftovers if left.what != "ratelimit"]
    assert [(left.what, left.pid) for left in leftovers] == [("runner", runner), ("api", api)]
    message = leftover_message(leftovers, run_file.path)
    assert f"runner     pid {runner}" in message
    assert f"api        pid {api}  port 8000  metrics 9000" in message
    assert "make stop" in message
    assert "--replace" in message
    stop_leftovers(leftovers, grace=5.0)
    assert not pid_alive(runner)
    assert not pid_alive(api)
    assert pid_alive(reused)


def test_no_file_no_leftovers(tmp_path: Path) -> None:
    assert RunFile(tmp_path / "stack.json").leftovers() == []
