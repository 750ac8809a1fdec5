"""The Prometheus alert rules (deploy/prometheus/bulwark-alerts.yml) are valid and pass their
promtool unit tests (bulwark-alerts.test.yml: each alert fires on its series, and stays quiet
below its thresholds).

promtool comes from ``PROMTOOL``, else ``.bulwark/tools/bin/promtool`` (``make promtool``,
which ``make test`` runs first), else ``PATH``. Without it the tests are skipped, except
when ``CI`` is set: there they fail, so the rules are never left unchecked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "bulwark-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "bulwark-alerts.test.yml"


def _find_promtool() -> str | None:
    if explicit := os.environ.get("PROMTOOL"):
        return explicit
    local = ROOT / ".bulwark" / "tools" / "bin" / "promtool"
    if local.is_file():
        return str(local)
    return shutil.which("promtool")


@pytest.fixture(scope="module")
def promtool() -> str:
    """Path of promtool; skips (fails when ``CI`` is set) when there is none."""
    found = _find_promtool()
    if found is None:
        message = "promtool not found: run `make promtool` (Debian's prometheus package)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must check the alert rules")
        pytest.skip(message)
    return found


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed arguments, our own files
        list(argv), capture_output=True, text=True, timeout=60, check=False
    )


def test_the_alert_rules_are_valid(promtool: str) -> None:
    result = _run(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = _run(promtool, "test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
