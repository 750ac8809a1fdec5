"""Hot reload of the rules file: a changed file is picked up, a broken one keeps the old rules."""

import asyncio
import io
import json
import os
from pathlib import Path

import pytest

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.ratelimit.reload import RulesWatcher
from bulwark.ratelimit.rules import Rules, load_rules
from bulwark.ratelimit.server import RateLimitServer

ONE = (
    "domains: [{domain: test, descriptors: "
    "[{key: k, rate_limit: {requests: 1, window_seconds: 60}}]}]\n"
)
FIVE = ONE.replace("requests: 1", "requests: 5")
BROKEN = """domains:
  - domain: test
    descriptors:
      - key: k
        rate_limit: {requests: 5, window_seconds: 60}
        algorithm: fastest
"""


def touch_later(path: Path, text: str) -> None:
    """Write ``text`` with an mtime surely different from the previous write's."""
    before = path.stat().st_mtime_ns
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.mark.security(stride="T", asvs=("V13",))
def test_watcher_applies_a_valid_change_and_keeps_the_rules_on_a_broken_one(
    tmp_path: Path, log_stream: io.StringIO
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(ONE)
    applied: list[Rules] = []
    watcher = RulesWatcher(path, applied.append)
    assert not watcher.check()  # unchanged
    touch_later(path, FIVE)
    assert watcher.check()
    assert applied[-1].match("test", [("k", "v")]) == load_rules(path).match("test", [("k", "v")])
    start = log_stream.tell()
    touch_later(path, BROKEN)
    assert not watcher.check()
    assert len(applied) == 1
    log_stream.seek(start)
    failures = [
        json.loads(line)
        for line in log_stream.read().splitlines()
        if '"rules_reload_failed"' in line
    ]
    assert len(failures) == 1
    assert "line 6" in failures[0]["error"]
    assert "algorithm" in failures[0]["error"]
    assert not watcher.check()  # not retried until it changes again
    path.unlink()
    assert not watcher.check()  # a vanished file keeps the rules too


async def test_server_picks_up_a_changed_file_without_restart(
    start_server: object, rules_path: Path
) -> None:
    rules_path.write_text(ONE)  # noqa: ASYNC240 - a tiny file, before the server starts
    server: RateLimitServer = await start_server()  # type: ignore[operator]
    client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
    try:
        assert (await client.should_rate_limit([[("k", "a")]])).allowed
        assert not (await client.should_rate_limit([[("k", "a")]])).allowed
        touch_later(rules_path, FIVE)
        for _ in range(40):  # polled every second
            await asyncio.sleep(0.1)
            if (await client.should_rate_limit([[("k", "a")]], hits_addend=0)).allowed:
                break
        assert (await client.should_rate_limit([[("k", "a")]])).remaining == 3
        touch_later(rules_path, BROKEN)
        await asyncio.sleep(2.2)
        decision = await client.should_rate_limit([[("k", "a")]])
        assert decision.allowed
        assert decision.limit == 5  # the old rules are still in force
    finally:
        await client.close()
