"""Stack life cycle with stand-in services (real processes, loopback only)."""

import io
import os
import sys
import time
from pathlib import Path

import pytest

from bulwark.devstack.net import free_port, http_ok
from bulwark.devstack.stack import ServiceSpec, Stack, StackConfig, StackError, bulwark_services

STANDIN = str(Path(__file__).with_name("standin.py"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def _serving(name: str, env: dict[str, str] | None = None) -> tuple[ServiceSpec, int]:
    port = free_port()
    spec = ServiceSpec(
        name=name,
        argv=[sys.executable, STANDIN, "serve", str(port)],
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
    assert specs["api"].env["ISSUER"] == specs["auth"].env["ISSUER"] == "http://127.0.0.1:9001"
    assert specs["api"].env["RATELIMIT_TARGET"] == "127.0.0.1:9051"
    assert "DATABASE_URL" not in specs["ratelimit"].env
    assert specs["ratelimit"].env["REDIS_URL"] == "redis://h:1/0"
    for name in ("auth", "api"):  # both use the revoked-session set, under one prefix
        assert specs[name].env["REDIS_URL"] == "redis://h:1/0"
        assert specs[name].env["REDIS_KEY_PREFIX"] == "bulwark:"
    assert [s.name for s in bulwark_services(config, only=["auth"])] == ["auth"]


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
