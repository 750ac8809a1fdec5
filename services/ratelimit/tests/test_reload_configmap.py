"""Hot reload of rules mounted from a Kubernetes ConfigMap (deploy/k8s/base/ratelimit.yaml).

The kubelet writes a ConfigMap volume as a timestamped directory, a ``..data`` link to it,
and one link per key through ``..data``; an update writes a new timestamped directory,
renames a new link over ``..data`` (one atomic step) and removes the old directory. The
file named by RATELIMIT_RULES is never written in place: only the link under it changes.
This test builds that layout on a real directory, runs the real server (gRPC, Redis), and
swaps it as the kubelet does.
"""

import asyncio
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from bulwark.common.ratelimit_client import RateLimitClient
from bulwark.ratelimit.reload import DEFAULT_INTERVAL_SECONDS
from bulwark.ratelimit.server import RateLimitServer

from .conftest import ServerFactory

ONE = (
    "domains: [{domain: test, descriptors: "
    "[{key: k, rate_limit: {requests: 1, window_seconds: 60}}]}]\n"
)
FIVE = ONE.replace("requests: 1", "requests: 5")  # the same size as ONE


class ConfigMapVolume:
    """A directory laid out and updated as the kubelet's atomic writer does."""

    def __init__(self, directory: Path) -> None:
        """Use ``directory`` (created) as the volume's mount point."""
        self.directory = directory
        directory.mkdir()
        self._serial = 0

    def write(self, files: dict[str, str]) -> None:
        """Publish ``files`` (name -> content) as the volume's new content, atomically."""
        self._serial += 1
        stamp = datetime.now(UTC).strftime("%Y_%m_%d_%H_%M_%S")
        fresh = self.directory / f"..{stamp}.{self._serial:09d}"
        fresh.mkdir()
        for name, text in files.items():
            (fresh / name).write_text(text)
        data = self.directory / "..data"
        old = data.resolve() if data.is_symlink() else None
        staging = self.directory / "..data_tmp"
        staging.symlink_to(fresh.name)
        staging.rename(data)  # rename(2): readers see the old target or the new one
        for name in files:
            link = self.directory / name
            if not link.is_symlink():
                link.symlink_to(f"..data/{name}")
        if old is not None:
            shutil.rmtree(old)


async def _wait_for_limit(client: RateLimitClient, limit: int, seconds: float) -> float:
    """Seconds until a call (counting nothing) reports ``limit``; fails after ``seconds``."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        decision = await client.should_rate_limit([[("k", "a")]], hits_addend=0)
        if decision.limit == limit:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"the limit of {limit} was not in force within {seconds} s")


async def test_a_configmap_swap_of_the_rules_takes_effect_without_restart(
    start_server: ServerFactory, tmp_path: Path
) -> None:
    volume = ConfigMapVolume(tmp_path / "rules")
    volume.write({"rules.yaml": ONE})
    rules = volume.directory / "rules.yaml"
    server: RateLimitServer = await start_server(RATELIMIT_RULES=str(rules))
    client = RateLimitClient(f"127.0.0.1:{server.port}", "test", timeout_seconds=2.0)
    # One poll after the swap is due within the interval; the rest is slack for a loaded
    # machine (2 cores shared by the whole test suite).
    deadline = DEFAULT_INTERVAL_SECONDS + 1.5
    try:
        assert (await client.should_rate_limit([[("k", "a")]])).allowed
        assert not (await client.should_rate_limit([[("k", "a")]])).allowed
        link, target = os.lstat(rules), os.stat(rules)

        volume.write({"rules.yaml": FIVE})
        assert os.lstat(rules) == link  # the link itself is untouched ...
        assert os.stat(rules).st_ino != target.st_ino  # ... what it leads to is new
        await _wait_for_limit(client, 5, deadline)
        decision = await client.should_rate_limit([[("k", "a")]])
        assert decision.allowed
        assert decision.remaining == 3  # the counts made under the old rules still hold

        volume.write({"rules.yaml": ONE})  # and back again: every swap is seen
        await _wait_for_limit(client, 1, deadline)
        assert not (await client.should_rate_limit([[("k", "a")]])).allowed
        assert len([p for p in volume.directory.iterdir() if p.name.startswith("..2")]) == 1
    finally:
        await client.close()
