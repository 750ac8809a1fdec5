"""Stack life cycle with stand-in services (real processes, loopback only)."""

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bulwark.devstack.net import free_port, http_ok
from bulwark.devstack.stack import (
    Backoff,
    ServiceSpec,
    Stack,
    StackConfig,
    StackError,
    bulwark_services,
)

STANDIN = str(Path(__file__).with_name("standin.py"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _serving(
    name: str, env: dict[str, str] | None = None, mode: str = "serve"
) -> tuple[ServiceSpec, int]:
    port = free_port()
    spec = ServiceSpec(
        name=name,
        argv=[sys.executable, STANDIN, mode, str(port)],
        env=env or {},
        ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
        ready_timeout=10,
    )
    return spec, port


def _grandchild(log: Path) -> int:
    line = next(ln for ln in log.read_text().splitlines() if ln.startswith("grandchild"))
    return int(line.split()[1])


def test_starts_in_order_logs_and_stops_the_whole_group(tmp_path: Path) -> None:
    first, first_port = _serving("first", {"PORT": "1", "EXTRA": "x"})
    second, second_port = _serving("second")
    echo = io.StringIO()
    with Stack([first, second], tmp_path, echo=echo) as stack:
        assert http_ok(f"http://127.0.0.1:{first_port}/")
        assert http_ok(f"http://127.0.0.1:{second_port}/")
        assert stack.exited() == {}
        time.sleep(0.3)  # let the pumps copy the output
        grandchildren = [_grandchild(tmp_path / f"{n}.log") for n in ("first", "second")]
        assert all(_alive(pid) for pid in grandchildren)
    assert not any(_alive(pid) for pid in grandchildren)
    assert not http_ok(f"http://127.0.0.1:{first_port}/")
    log = (tmp_path / "first.log").read_text()
    assert "to stderr" in log
    assert "first    | to stderr" in echo.getvalue()


def test_an_early_exit_stops_the_others_and_shows_the_log(tmp_path: Path) -> None:
    good, port = _serving("good")
    bad = ServiceSpec("bad", [sys.executable, STANDIN, "crash"], {}, lambda: False, 10)
    stack = Stack([good, bad], tmp_path)
    with pytest.raises(StackError, match=r"bad exited with code 3(.|\n)*boom: cannot start"):
        stack.start()
    assert not http_ok(f"http://127.0.0.1:{port}/")
    assert not any(_alive(pid) for pid in [_grandchild(tmp_path / "good.log")])


def test_not_ready_in_time_is_killed_even_if_it_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = ServiceSpec("stubborn", [sys.executable, STANDIN, "stubborn"], {}, lambda: False, 1)
    stack = Stack([stubborn], tmp_path, stop_grace=0.5)
    started = time.monotonic()
    with pytest.raises(StackError, match=r"not ready after 1 s(.|\n)*ignoring SIGTERM"):
        stack.start()
    assert time.monotonic() - started < 5
    assert stack.exited() == {}  # nothing left to watch: every process was reaped


def test_bulwark_services_wire_urls_and_isolate_variables(tmp_path: Path) -> None:
    config = StackConfig(
        auth_database_url="postgresql://h/a",
        api_database_url="postgresql://h/b",
        redis_url="redis://h:1/0",
        auth_port=9001,
        api_port=9000,
        ratelimit_port=9051,
        keys_dir=tmp_path,
        env={"auth": {"LOG_LEVEL": "debug"}},
    )
    specs = {s.name: s for s in bulwark_services(config)}
    assert list(specs) == ["ratelimit", "auth", "api"]
    assert specs["auth"].env["DATABASE_URL"] == "postgresql://h/a"
    assert specs["auth"].env["LOG_LEVEL"] == "debug"
    assert specs["api"].env["LOG_LEVEL"] == "info"
    assert specs["api"].env["DATABASE_URL"] == "postgresql://h/b"
    assert specs["api"].env["JWKS_URL"] == "http://127.0.0.1:9001/.well-known/jwks.json"
    assert specs["auth"].env["APP_VERSIONS_URL"] == "http://127.0.0.1:9000/v1/app-versions"
    assert specs["api"].env["ISSUER"] == specs["auth"].env["ISSUER"] == "http://127.0.0.1:9001"
    assert specs["api"].env["RATELIMIT_TARGET"] == "127.0.0.1:9051"
    assert "DATABASE_URL" not in specs["ratelimit"].env
    assert specs["ratelimit"].env["REDIS_URL"] == "redis://h:1/0"
    for name in ("auth", "api"):  # both use the revoked-session set, under one prefix
        assert specs[name].env["REDIS_URL"] == "redis://h:1/0"
        assert specs[name].env["REDIS_KEY_PREFIX"] == "bulwark:"
    assert [s.name for s in bulwark_services(config, only=["auth"])] == ["auth"]
    assert all("SMTP_URL" not in spec.env for spec in specs.values())  # no sink: no mail


def test_only_auth_gets_the_smtp_url_and_no_mail_variable_leaks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StackConfig(
        auth_database_url="postgresql://h/a",
        api_database_url="postgresql://h/b",
        redis_url="redis://h:1/0",
        smtp_url="smtp://127.0.0.1:10025",
    )
    envs = config.service_env()
    assert envs["auth"]["SMTP_URL"] == "smtp://127.0.0.1:10025"
    assert "SMTP_URL" not in envs["api"]
    assert "SMTP_URL" not in envs["ratelimit"]
    # Our own mail settings stay ours: a service gets only what its spec gives it.
    for name in ("SMTP_URL", "SMTP_USERNAME", "SMTP_PASSWORD", "MAIL_FROM"):
        monkeypatch.setenv(name, "from-the-runner")
    show = "import os; print(sorted(k for k in os.environ if 'SMTP' in k or 'MAIL' in k))"
    spec, _ = _serving("svc", {"SMTP_URL": "smtp://127.0.0.1:10025"})
    spec = ServiceSpec(
        spec.name, spec.argv, spec.env, spec.ready, 10, setup=[[sys.executable, "-c", show]]
    )
    with Stack([spec], tmp_path):
        pass
    assert "['SMTP_URL']" in (tmp_path / "svc.log").read_text()


def test_one_service_stops_and_starts_again_while_the_others_run(tmp_path: Path) -> None:
    first, first_port = _serving("first")
    second, second_port = _serving("second")
    with Stack([first, second], tmp_path, stop_grace=2.0) as stack:
        stack.stop_service("first")
        assert not http_ok(f"http://127.0.0.1:{first_port}/")
        assert http_ok(f"http://127.0.0.1:{second_port}/")
        with pytest.raises(KeyError):
            stack.stop_service("first")
        with pytest.raises(KeyError):
            stack.pid("first")
        stack.start_service("first")
        assert http_ok(f"http://127.0.0.1:{first_port}/")
        assert _alive(stack.pid("first"))
        with pytest.raises(KeyError):
            stack.start_service("third")
    assert not http_ok(f"http://127.0.0.1:{first_port}/")
    assert not http_ok(f"http://127.0.0.1:{second_port}/")


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first=0.5, cap=30.0)
    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1, 2, 4, 8, 16, 30, 30]


def _supervise_until(stack: Stack, done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "timed out"
        stack.supervise()
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_a_killed_service_is_restarted_with_backoff_while_the_other_serves(
    tmp_path: Path,
) -> None:
    first, first_port = _serving("first", mode="lone")
    second, second_port = _serving("second", mode="lone")
    events: list[str] = []
    backoff = Backoff(first=0.2, cap=0.4, stable_after=2.0)
    with Stack(
        [first, second], tmp_path, stop_grace=2.0, backoff=backoff, notify=events.append
    ) as stack:
        second_pid = stack.pid("second")
        # Three exits in a row wait 0.2, 0.4 and 0.4 s (the cap); after two seconds up, the
        # next one waits 0.2 s again.
        for delay, pause in ((0.2, 0.0), (0.4, 0.0), (0.4, 0.0), (0.2, 2.1)):
            time.sleep(pause)
            old = stack.pid("first")
            killed_at = time.monotonic()
            os.kill(old, signal.SIGKILL)
            second_answered: list[bool] = []

            def first_is_back(old: int = old, answers: list[bool] = second_answered) -> bool:
                answers.append(http_ok(f"http://127.0.0.1:{second_port}/"))
                return stack.pids().get("first", old) != old

            _supervise_until(stack, first_is_back)
            assert time.monotonic() - killed_at >= delay
            _supervise_until(stack, lambda: http_ok(f"http://127.0.0.1:{first_port}/"))
            assert all(second_answered)
            assert stack.pid("second") == second_pid
        _supervise_until(stack, lambda: any("serving again" in e for e in events[-2:]))
    assert not http_ok(f"http://127.0.0.1:{first_port}/")
    assert stack.pids() == {}
    waits = [e.split("restarting it in ")[1] for e in events if "restarting it in" in e]
    assert waits == [
        "0.2 s (exit 1 in a row)",
        "0.4 s (exit 2 in a row)",
        "0.4 s (exit 3 in a row)",
        "0.2 s (exit 1 in a row)",
    ]
    assert events[0].startswith("first exited with code -9 after ")
    assert any(e.startswith("first restarted (pid ") for e in events)


def test_a_service_stopped_while_waiting_for_its_restart_stays_stopped(tmp_path: Path) -> None:
    first, first_port = _serving("first", mode="lone")
    events: list[str] = []
    with Stack([first], tmp_path, backoff=Backoff(first=0.3), notify=events.append) as stack:
        os.kill(stack.pid("first"), signal.SIGKILL)
        _supervise_until(stack, lambda: bool(events))
        stack.stop_service("first")
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            stack.supervise()
            time.sleep(0.05)
        assert stack.pids() == {}
        with pytest.raises(KeyError):
            stack.stop_service("first")
    assert not http_ok(f"http://127.0.0.1:{first_port}/")


# A runner: starts one stand-in service with a Stack, prints its pid, then waits to be killed.
_RUNNER = """
import sys, time
from pathlib import Path
from bulwark.devstack.net import http_ok
from bulwark.devstack.stack import ServiceSpec, Stack
standin, port, logs = sys.argv[1], sys.argv[2], Path(sys.argv[3])
url = f"http://127.0.0.1:{port}/"
spec = ServiceSpec("lone", [sys.executable, standin, "lone", port], {}, lambda: http_ok(url), 10)
stack = Stack([spec], logs).start()
print(stack.pid("lone"), flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.timeout(30)
def test_services_die_with_a_runner_killed_by_sigkill(tmp_path: Path) -> None:
    port = free_port()
    runner = subprocess.Popen(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", _RUNNER, STANDIN, str(port), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    service = 0
    try:
        assert runner.stdout is not None
        service = int(runner.stdout.readline())
        assert http_ok(f"http://127.0.0.1:{port}/")
        runner.kill()
        runner.wait()
        deadline = time.monotonic() + 3
        while _alive(service) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(service), "the service outlived its runner"
        assert not http_ok(f"http://127.0.0.1:{port}/")
    finally:
        runner.kill()
        runner.wait()
        if service and _alive(service):
            os.killpg(service, signal.SIGKILL)
