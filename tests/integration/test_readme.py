"""The README's commands, as written: its curl walk-through runs (through bash and the real
``curl`` and ``jq``) against a real stack with every status it claims, and the other commands
it gives name make targets and installed programs that exist."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import RunningStack

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
_WALKTHROUGHS = ("walkthrough", "oauth-walkthrough")
_STATUS = re.compile(r"#\s*(\d{3})\b")
# Every call's status goes to the file named by $STATUSES, one line each, in order; its body
# still goes where the README sends it (the terminal, a pipe into jq).
_RECORD_STATUSES = """\
set -euo pipefail
curl() { command curl -w '%{stderr}%{http_code}\\n' "$@" 2>>"$STATUSES"; }
"""


def _walkthrough(name: str = "walkthrough") -> str:
    found = re.search(rf"<!-- {name} -->\s*```sh\n(.+?)\n```", README.read_text(), re.DOTALL)
    assert found, f"no <!-- {name} --> ```sh block in README.md"
    return found.group(1)


def _expected_statuses(block: str) -> list[int]:
    """The status each curl call of ``block`` claims: the first ``# NNN`` comment from the
    line the command starts on up to the next curl command."""
    steps: list[str] = []
    continued = False
    for line in block.splitlines():
        starts = not continued and not line.lstrip().startswith("#") and "curl " in line
        if starts:
            steps.append(line)
        elif steps:
            steps[-1] += "\n" + line
        continued = line.split(" #")[0].rstrip().endswith("\\")
    expected = []
    for step in steps:
        found = _STATUS.search(step)
        assert found, f"no `# NNN` status for this README step:\n{step}"
        expected.append(int(found.group(1)))
    return expected


def test_the_walkthrough_block_claims_a_status_per_call() -> None:
    statuses = _expected_statuses(_walkthrough())
    assert len(statuses) >= 15
    assert statuses.count(204) == 3  # DELETE, logout and logout-all each answer 204


def test_the_oauth_walkthrough_claims_a_status_per_call() -> None:
    statuses = _expected_statuses(_walkthrough("oauth-walkthrough"))
    assert statuses.count(303) == 2  # the sign-in and the consent form
    assert statuses[-2:] == [200, 400]  # the code exchanged once


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", _WALKTHROUGHS)
def test_the_curl_walkthrough_runs_as_written(
    stack: RunningStack, tmp_path: Path, name: str
) -> None:
    if shutil.which("jq") is None or shutil.which("curl") is None:
        pytest.fail("the README walk-through needs curl and jq on PATH (`make jq` installs jq)")
    block = _walkthrough(name)
    expected = _expected_statuses(block)
    statuses = tmp_path / "statuses"
    statuses.touch()
    result = subprocess.run(  # noqa: S603 - fixed bash, the README's own text
        ["/bin/bash", "-c", _RECORD_STATUSES + block],
        env={
            **os.environ,
            "AUTH": stack.auth_url,
            "API": stack.api_url,
            "STATUSES": str(statuses),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    got = [int(line) for line in statuses.read_text().split()]
    detail = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 0, detail
    assert got == expected, detail


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z_-]+):", text, re.MULTILINE))


def _commands() -> list[str]:
    """The commands the README gives: its ``sh`` blocks' lines and its inline code spans that
    start with ``make``, ``.venv/bin/``, ``uv`` or a variable assignment."""
    text = README.read_text()
    spans = re.findall(r"`([^`\n]+)`", text)
    blocks = re.findall(r"```sh\n(.+?)\n```", text, re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    starts = ("make ", "uv ", ".venv/bin/", "DATABASE_URL=")
    return [c for c in (*spans, *lines) if c.strip().startswith(starts)]


def test_readme_commands_name_targets_and_programs_that_exist() -> None:
    commands = _commands()
    assert any(c.startswith("make run") for c in commands)
    targets = _make_targets()
    venv_bin = ROOT / ".venv" / "bin"
    for command in commands:
        words = shlex.split(command.split(" #")[0])
        while words and "=" in words[0] and not words[0].startswith("-"):
            words = words[1:]  # VAR=value before the program
        program = words[0]
        assert program != "uv", (
            f"`{command}`: uv is not on PATH after `make` (use make or .venv/bin)"
        )
        if program == "make":
            wanted = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert set(wanted) <= targets, f"`{command}`: no such make target"
        elif program.startswith(".venv/bin/"):
            assert (venv_bin / program.removeprefix(".venv/bin/")).exists(), command
