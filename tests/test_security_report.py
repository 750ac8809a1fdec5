"""docs/security-report.md cannot drift from the tests marked ``security``.

- Every marked test (tests/browser included) is listed in the committed report, and the
  commit the report names is in the history of HEAD: a new marked test means running
  ``make security-report`` again.
- Every test docs/threat-model.md cites is in it (so marked).
- The plugin that writes it (tests/security_report.py) refuses a mark naming an unknown STRIDE
  letter or ASVS chapter at collection, and its report lists a failed test as failed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.test_threat_model import cited_tests

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "security-report.md"


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run pytest in a child process (the repository importable, no cache written)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(  # noqa: S603 - our own interpreter and fixed arguments
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _marked_files() -> list[str]:
    """The test modules that mention the marker: the only ones that can hold marked tests."""
    files = []
    for top in ("libs", "services", "tests"):
        for path in sorted((ROOT / top).rglob("test_*.py")):
            if "pytest.mark.security(" in path.read_text(encoding="utf-8"):
                files.append(str(path.relative_to(ROOT)))
    return files


def test_every_marked_test_is_in_the_report_of_an_earlier_commit() -> None:
    collected = _pytest(
        "--collect-only", "-q", "-m", "security and not containers", *_marked_files(), cwd=ROOT
    )
    assert collected.returncode == 0, collected.stdout + collected.stderr
    marked = {line for line in collected.stdout.splitlines() if "::" in line}
    assert len(marked) > 100, collected.stdout  # the -m above overrode pyproject's addopts

    assert REPORT.exists(), "no docs/security-report.md: run make security-report"
    text = REPORT.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (?:`` (.+?) ``|`([^`]+)`) \|", text, flags=re.MULTILINE)
    listed = {spaced or plain for spaced, plain in rows}
    missing = sorted(marked - listed)
    assert not missing, "marked tests missing from docs/security-report.md (run make " + (
        "security-report):\n  " + "\n  ".join(missing)
    )

    commit = re.search(r"^- Commit: `([0-9a-f]{40})`", text, flags=re.MULTILINE)
    assert commit, "docs/security-report.md names no commit"
    ancestor = subprocess.run(  # noqa: S603 - git with fixed arguments
        ["git", "merge-base", "--is-ancestor", commit[1], "HEAD"],  # noqa: S607 - git from PATH
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    assert ancestor.returncode == 0, f"the report's commit {commit[1]} is not an ancestor of HEAD"


def test_a_mark_naming_an_unknown_letter_or_chapter_stops_collection(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_marks.py").write_text(
        "import pytest\n\n"
        '@pytest.mark.security(stride="SX", asvs=("V6.3",))\n'
        "def test_letter(): pass\n\n"
        '@pytest.mark.security(stride="S", asvs=("V18.1",))\n'
        "def test_chapter(): pass\n\n"
        '@pytest.mark.security(stride="S")\n'
        "def test_no_asvs(): pass\n",
        encoding="utf-8",
    )
    run = _pytest("-p", "tests.security_report", "--collect-only", "-q", cwd=tmp_path)
    assert run.returncode != 0
    for name in ("test_letter", "test_chapter", "test_no_asvs"):
        assert f"test_marks.py::{name}:" in run.stderr, run.stderr


def test_the_report_lists_failures_and_what_is_not_covered(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    (tmp_path / "test_some.py").write_text(
        "import pytest\n\n"
        'pytestmark = pytest.mark.security(stride="S", asvs=("V6.3",))\n\n'
        "def test_holds(): pass\n\n"
        '@pytest.mark.security(stride="D", asvs=("V2.4", "V6"))\n'
        "def test_breaks(): assert False\n",
        encoding="utf-8",
    )
    report = tmp_path / "report.md"
    run = _pytest("-p", "tests.security_report", "--security-report", str(report), cwd=tmp_path)
    assert run.returncode == 1, run.stdout
    text = report.read_text(encoding="utf-8")
    assert "- Totals: 2 tests: 1 passed, 1 failed, 0 skipped, 0 errors" in text
    assert "## Failures\n\n- `test_some.py::test_breaks`: failed" in text
    assert "| `test_some.py::test_breaks` | V2.4, V6, V6.3 | failed |" in text
    assert "### D: Denial of service" in text
    assert "- V17 WebRTC: Bulwark has no WebRTC" in text
    assert "- STRIDE T (Tampering):" in text
    assert "- V6 Authentication" not in text


def test_every_test_the_threat_model_cites_is_in_the_report() -> None:
    """docs/threat-model.md names the tests that prove its mitigations: each is a marked
    security test, so the report shows how it went (tests/containers aside: make
    test-containers runs them, the report does not)."""
    listed = REPORT.read_text(encoding="utf-8")
    cited = cited_tests((ROOT / "docs" / "threat-model.md").read_text(encoding="utf-8"))
    unlisted = sorted(
        f"{path}::{name}"
        for path, name in cited
        if not path.startswith("tests/containers/")
        and not re.search(rf"`{re.escape(path)}::{re.escape(name)}(\[[^`]*\])?`", listed)
    )
    assert not unlisted, "cited by the threat model, not marked security: " + ", ".join(unlisted)
