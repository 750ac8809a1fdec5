"""The ``security`` marker and the security test report (docs/security-report.md, issue 14).

A security test says which threats (STRIDE letters) and which OWASP ASVS 5.0 requirements
it covers::

    pytestmark = pytest.mark.security(stride="ST", asvs=("V6.3", "V2.4"))

``stride`` is one or more of S, T, R, I, D, E; ``asvs`` one or more ids of ASVS 5.0
(``V9``, ``V9.1``, ``V9.1.1``), whose chapter is the part before the first dot. A test may
carry several marks (its module's and its own): they add up. A mark that names an unknown
letter or chapter stops the run at collection, in every run: the root conftest.py loads this
plugin for all of them.

With ``--security-report PATH`` the run writes the report to PATH when it ends, from that
run's outcomes: date, commit, command, totals, the tests by STRIDE letter and by ASVS chapter,
and what no test covers. ``make security-report`` runs the marked tests with it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

STRIDE = {
    "S": "Spoofing",
    "T": "Tampering",
    "R": "Repudiation",
    "I": "Information disclosure",
    "D": "Denial of service",
    "E": "Elevation of privilege",
}

# The chapters of OWASP ASVS 5.0.0 (May 2025), by their ids.
ASVS_CHAPTERS = {
    "V1": "Encoding and Sanitization",
    "V2": "Validation and Business Logic",
    "V3": "Web Frontend Security",
    "V4": "API and Web Service",
    "V5": "File Handling",
    "V6": "Authentication",
    "V7": "Session Management",
    "V8": "Authorization",
    "V9": "Self-contained Tokens",
    "V10": "OAuth and OIDC",
    "V11": "Cryptography",
    "V12": "Secure Communication",
    "V13": "Configuration",
    "V14": "Data Protection",
    "V15": "Secure Coding and Architecture",
    "V16": "Security Logging and Error Handling",
    "V17": "WebRTC",
}

# Why a chapter or a STRIDE letter may have no marked test: shown under "Not covered" when
# the run has none for it.
NOT_COVERED = {
    "V12": (
        "TLS is terminated in front of the services (API Gateway with the TLS_1_2 policy, or "
        "the Kubernetes ingress; docs/deploy.md, 'TLS and the client address'); the services "
        "speak plain HTTP and gRPC inside the cluster and no test here runs TLS"
    ),
    "V17": "Bulwark has no WebRTC",
}

_ASVS_ID = re.compile(r"V([1-9][0-9]*)(\.[1-9][0-9]*){0,2}")

# An outcome per test, worst last: a test that fails its call and errors in teardown is failed.
_OUTCOMES = ("passed", "xfailed", "skipped", "not run", "xpassed", "failed", "error")


@dataclass(frozen=True)
class Coverage:
    """What one test covers: STRIDE letters and ASVS ids, each sorted and unique."""

    stride: tuple[str, ...]
    asvs: tuple[str, ...]

    @property
    def chapters(self) -> tuple[str, ...]:
        """The ASVS chapters (``V6``) of the ids, in chapter order."""
        return tuple(sorted({i.split(".")[0] for i in self.asvs}, key=_chapter_number))


def _chapter_number(asvs_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in asvs_id[1:].split("."))


def _as_tuple(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a string or a tuple of strings, got {value!r}")


def coverage_of(item: pytest.Item) -> Coverage | None:
    """The union of ``item``'s ``security`` marks, or None when it has none.

    Raises ValueError naming the fault when a mark lacks ``stride`` or ``asvs``, takes
    positional arguments, or names a letter that is not STRIDE's or a chapter that ASVS 5.0
    does not have.
    """
    marks = list(item.iter_markers("security"))
    if not marks:
        return None
    stride: set[str] = set()
    asvs: set[str] = set()
    for mark in marks:
        unknown = set(mark.kwargs) - {"stride", "asvs"}
        if mark.args or unknown or "stride" not in mark.kwargs or "asvs" not in mark.kwargs:
            raise ValueError('use security(stride="...", asvs=("V<chapter>.<section>", ...))')
        letters = "".join(_as_tuple(mark.kwargs["stride"]))
        ids = _as_tuple(mark.kwargs["asvs"])
        if not letters or any(letter not in STRIDE for letter in letters):
            raise ValueError(f"stride={letters!r}: each letter must be one of {''.join(STRIDE)}")
        for asvs_id in ids or ("",):
            if not _ASVS_ID.fullmatch(asvs_id) or asvs_id.split(".")[0] not in ASVS_CHAPTERS:
                raise ValueError(f"asvs id {asvs_id!r} is not of an ASVS 5.0 chapter (V1 to V17)")
        stride.update(letters)
        asvs.update(ids)
    return Coverage(
        stride=tuple(sorted(stride, key="STRIDE".index)),
        asvs=tuple(sorted(asvs, key=_chapter_number)),
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--security-report PATH``."""
    parser.getgroup("security report").addoption(
        "--security-report",
        metavar="PATH",
        help="write the security test report of this run to PATH (make security-report)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker's checks, and the report's recorder when it is asked for."""
    config.pluginmanager.register(_MarkChecker(), "security-mark-checker")
    path = config.getoption("security_report")
    if path:
        config.pluginmanager.register(_Report(config, Path(path)), "security-report")


class _MarkChecker:
    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Check every collected test's marks before any is deselected."""
        faults = []
        for item in items:
            try:
                coverage_of(item)
            except ValueError as error:
                faults.append(f"{item.nodeid}: {error}")
        if faults:
            raise pytest.UsageError("bad security marks:\n  " + "\n  ".join(faults))


class _Report:
    """Records the outcome of each marked test and writes the report at the end."""

    def __init__(self, config: pytest.Config, path: Path) -> None:
        self.config = config
        self.path = path
        self.started = time.monotonic()
        # Read before any test runs: what ran is the commit plus the changes made before the
        # run, not files a test writes (the browser tests' screenshots), nor the report itself.
        root = config.rootpath.resolve()
        self.commit = _git(root, "rev-parse", "HEAD") or "unknown"
        report = path.resolve()
        exclude = [f":(exclude){report.relative_to(root)}"] if report.is_relative_to(root) else []
        self.dirty = bool(_git(root, "status", "--porcelain", "--", ".", *exclude))
        self.coverage: dict[str, Coverage] = {}
        self.outcomes: dict[str, str] = {}
        self.collection_errors: list[str] = []

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """A module that cannot be collected is an error of the run, reported as such."""
        if report.failed:
            self.collection_errors.append(report.nodeid or "(the session)")

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        """The marked tests this run selected."""
        for item in session.items:
            coverage = coverage_of(item)
            if coverage is not None:
                self.coverage[item.nodeid] = coverage

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Keep each test's worst outcome over setup, call and teardown."""
        if report.nodeid not in self.coverage:
            return
        if report.when == "call":
            outcome = report.outcome
            if hasattr(report, "wasxfail"):
                outcome = "xfailed" if report.skipped else "xpassed"
        elif report.failed:
            outcome = "error"
        elif report.skipped:
            outcome = "skipped"
        else:
            return
        earlier = self.outcomes.get(report.nodeid, "passed")
        self.outcomes[report.nodeid] = max(earlier, outcome, key=_OUTCOMES.index)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Write the report (also when tests failed: it lists them)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(self.render(), encoding="utf-8")

    def outcome(self, nodeid: str) -> str:
        """The test's outcome, ``not run`` when the run ended before it."""
        return self.outcomes.get(nodeid, "not run")

    def render(self) -> str:
        """The report as Markdown; the same run always gives the same text but its date."""
        command = shlex.join(["pytest", *self.config.invocation_params.args])
        totals = Counter(self.outcome(nodeid) for nodeid in self.coverage)
        lines = [
            "# Security test report",
            "",
            "Generated by `make security-report` (the plugin tests/security_report.py) from one",
            "run of the tests marked `security`; do not edit by hand. Each test is listed under",
            "every STRIDE threat and ASVS 5.0 chapter its marks name.",
            "tests/test_security_report.py fails when a marked test is missing here, or when",
            "this commit is not in the history.",
            "",
            f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- Commit: `{self.commit}`" + (" (with uncommitted changes)" if self.dirty else ""),
            f"- Command: `{command}`",
            f"- Duration: {time.monotonic() - self.started:.0f} s",
            f"- Totals: {len(self.coverage)} tests: " + _counts(totals),
            "",
        ]
        bad = sorted(n for n in self.coverage if self.outcome(n) in {"failed", "error", "xpassed"})
        if bad or self.collection_errors:
            lines += ["## Failures", ""]
            errors = self.collection_errors
            lines += [f"- {_code(n)}: could not be collected (error)" for n in errors]
            lines += [f"- {_code(n)}: {self.outcome(n)}" for n in bad]
            lines.append("")
        lines += ["## By threat (STRIDE)", ""]
        for letter, name in STRIDE.items():
            tests = sorted(n for n, c in self.coverage.items() if letter in c.stride)
            if tests:
                lines += self._section(f"{letter}: {name}", tests, with_asvs=False)
        lines += ["## By ASVS 5.0 chapter", ""]
        for chapter, name in ASVS_CHAPTERS.items():
            tests = sorted(n for n, c in self.coverage.items() if chapter in c.chapters)
            if tests:
                lines += self._section(f"{chapter} {name}", tests, with_asvs=True)
        lines += ["## Not covered", ""]
        lines += self._not_covered()
        return "\n".join(lines).rstrip("\n") + "\n"

    def _section(self, title: str, tests: list[str], *, with_asvs: bool) -> list[str]:
        counts = Counter(self.outcome(n) for n in tests)
        lines = [f"### {title}", "", f"{len(tests)} tests: {_counts(counts)}", ""]
        if with_asvs:
            lines += ["| Test | ASVS | Outcome |", "| --- | --- | --- |"]
            for n in tests:
                asvs = ", ".join(self.coverage[n].asvs)
                lines.append(f"| {_code(n)} | {asvs} | {self.outcome(n)} |")
        else:
            lines += ["| Test | Outcome |", "| --- | --- |"]
            lines += [f"| {_code(n)} | {self.outcome(n)} |" for n in tests]
        return [*lines, ""]

    def _not_covered(self) -> list[str]:
        chapters = {c for coverage in self.coverage.values() for c in coverage.chapters}
        letters = {s for coverage in self.coverage.values() for s in coverage.stride}
        lines = []
        for chapter, name in ASVS_CHAPTERS.items():
            if chapter not in chapters:
                reason = NOT_COVERED.get(chapter, "no reason recorded in tests/security_report.py")
                lines.append(f"- {chapter} {name}: {reason}")
        for letter, name in STRIDE.items():
            if letter not in letters:
                reason = NOT_COVERED.get(letter, "no reason recorded in tests/security_report.py")
                lines.append(f"- STRIDE {letter} ({name}): {reason}")
        return lines or ["Every ASVS 5.0 chapter and every STRIDE letter has a marked test."]


def _code(text: str) -> str:
    """``text`` as a Markdown code span, also when it holds a backtick (test ids can)."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _counts(counts: Counter[str]) -> str:
    shown = ["passed", "failed", "skipped", "error"]
    shown += [o for o in _OUTCOMES if o not in shown and counts[o]]
    return ", ".join(f"{counts[o]} {'errors' if o == 'error' else o}" for o in shown)


def _git(root: Path, *args: str) -> str:
    """``git args`` in ``root``: its output stripped, empty when git fails."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed git commands, no input from the run
            ["git", *args],  # noqa: S607 - git from PATH, as make and the developer use it
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()
