"""``make jq`` and ``make promtool`` (run by ``make test``), and the others that fetch a tool
(nginx, pgbouncer, chromium for ``make test-browser``), where the tool cannot be fetched:
one line on stderr saying what to install, and a failure, never apt's output instead.

Each runs the real Makefile from a scratch folder with a PATH of its own: no jq or promtool,
an ``id`` that says who we are, and an ``apt-get`` that fails the way it does offline."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MAKEFILE = Path(__file__).parents[2] / "Makefile"
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="no make")

_FAILING_APT = """#!/bin/bash
echo "Reading package lists..."
echo "E: Unable to locate package $3" >&2
exit 100
"""


def _make(
    tmp_path: Path, target: str, *, uid: int, apt: bool, variables: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("mkdir", "mktemp", "rm"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    (bin_dir / "id").write_text(f"#!/bin/bash\necho {uid}\n")
    (bin_dir / "id").chmod(0o755)
    if apt:
        (bin_dir / "apt-get").write_text(_FAILING_APT)
        (bin_dir / "apt-get").chmod(0o755)
    assert MAKE is not None
    return subprocess.run(  # noqa: S603 - make with our Makefile
        [MAKE, "--no-print-directory", "-f", str(MAKEFILE), target, *variables],
        cwd=tmp_path,
        env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _own_lines(stderr: str) -> list[str]:
    """stderr without make's own ``make: *** [...] Error 1`` line."""
    return [line for line in stderr.splitlines() if not line.startswith("make")]


@pytest.mark.parametrize(
    ("uid", "apt", "why"),
    [
        (0, True, "apt-get install jq failed"),
        (1000, True, "needs root"),
        (0, False, "no apt-get"),
    ],
)
def test_jq_that_cannot_be_installed_is_one_clear_line(
    tmp_path: Path, uid: int, apt: bool, why: str
) -> None:
    result = _make(tmp_path, "jq", uid=uid, apt=apt)
    assert result.returncode != 0
    lines = _own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert why in lines[0]
    assert "install jq" in lines[0]
    assert "Unable to locate" not in result.stdout + result.stderr


@pytest.mark.parametrize(("apt", "why"), [(True, "apt-get download"), (False, "no apt-get")])
def test_promtool_that_cannot_be_fetched_is_one_clear_line(
    tmp_path: Path, apt: bool, why: str
) -> None:
    result = _make(tmp_path, "promtool", uid=0, apt=apt)
    assert result.returncode != 0
    lines = _own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert why in lines[0]
    assert "install Prometheus's promtool" in lines[0]
    assert "Unable to locate" not in result.stdout + result.stderr


@pytest.mark.parametrize("tool", ["nginx", "pgbouncer"])
@pytest.mark.parametrize(("apt", "why"), [(True, "apt-get download"), (False, "no apt-get")])
def test_nginx_or_pgbouncer_that_cannot_be_fetched_is_one_clear_line(
    tmp_path: Path, tool: str, apt: bool, why: str
) -> None:
    result = _make(tmp_path, tool, uid=0, apt=apt)
    assert result.returncode != 0
    lines = _own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert why in lines[0]
    assert f"apt-get install {tool}" in lines[0]
    assert "Unable to locate" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("uid", "apt", "why"),
    [
        (0, True, "apt-get install chromium failed"),
        (1000, True, "needs root"),
        (0, False, "no apt-get"),
    ],
)
def test_chromium_that_cannot_be_installed_is_one_clear_line(
    tmp_path: Path, uid: int, apt: bool, why: str
) -> None:
    missing = tmp_path / "no-chromium"  # this machine may have /usr/bin/chromium
    result = _make(tmp_path, "browser", uid=uid, apt=apt, variables=(f"CHROMIUM={missing}",))
    assert result.returncode != 0
    lines = _own_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert why in lines[0]
    assert "apt-get install chromium" in lines[0]
    assert "Unable to locate" not in result.stdout + result.stderr
