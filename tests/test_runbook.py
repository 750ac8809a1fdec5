"""docs/runbook.md cannot drift from the alerts and the commands it names.

- Every alert of deploy/prometheus/bulwark-alerts.yml has a ``runbook_url`` that is a link
  to a heading of docs/runbook.md (GitHub's anchors: lower-case, punctuation dropped, spaces
  to hyphens, ``-1``, ``-2`` for repeats), and every in-page link of the runbook resolves.
- Every ``bulwark-auth``, ``bulwark-api``, ``bulwark-ratelimit`` and ``make`` command in the
  runbook (code blocks and inline code) names subcommands and ``--options`` that the
  program's own argparse help lists, and make targets that the Makefile defines.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from bulwark.api.cli import main as api_main
from bulwark.auth.cli import main as auth_main
from bulwark.ratelimit.cli import main as ratelimit_main

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "runbook.md"
RULES = ROOT / "deploy" / "prometheus" / "bulwark-alerts.yml"
MAKEFILE = ROOT / "Makefile"

PROGRAMS: dict[str, Callable[[list[str]], object]] = {
    "bulwark-auth": auth_main,
    "bulwark-api": api_main,
    "bulwark-ratelimit": ratelimit_main,
}

# A program at a command position: the start of a line, or after `--` (kubectl exec),
# `&&`, `;`, `|` or `$(`; a path before it (`.venv/bin/`) is allowed.
_COMMAND = re.compile(
    r"(?:^|\s--\s+|&&\s*|;\s*|\|\s*|\$\(\s*)(?:[\w./-]*/)?"
    r"(bulwark-auth|bulwark-api|bulwark-ratelimit|make)(?=\s|$)([^\n]*)"
)
_COMMAND_END = re.compile(r"&&|\|\||[|;)`]")
_SUBCOMMAND = re.compile(r"^[a-z][a-z0-9-]*$")
_CHOICES = re.compile(r"\{([a-z0-9,-]+)\}")


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower-case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Anchors of every ATX heading outside code blocks (repeats get ``-1``, ``-2``, ...)."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in _outside_code(markdown):
        heading = re.match(r"^#{1,6}\s+(.+?)\s*#*\s*$", line)
        if heading is None:
            continue
        anchor = github_anchor(heading.group(1))
        count = seen.get(anchor, 0)
        seen[anchor] = count + 1
        found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def _outside_code(markdown: str) -> Iterator[str]:
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def _code_text(markdown: str) -> list[str]:
    """Logical lines of code: fenced blocks (continuations joined) and inline code spans."""
    lines: list[str] = []
    fenced = False
    pending = ""
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            lines.append((pending + line).strip())
            pending = ""
    prose = " ".join(_outside_code(markdown))
    lines += [span.strip() for span in re.findall(r"`([^`]+)`", prose)]
    return lines


def commands(markdown: str) -> list[tuple[str, list[str]]]:
    """``(program, words)`` of every command of interest in ``markdown``'s code."""
    found = []
    for line in _code_text(markdown):
        for match in _COMMAND.finditer(line):
            rest = _COMMAND_END.split(match.group(2), maxsplit=1)[0]
            rest = re.sub(r"\s#\s.*$", "", rest)  # a shell comment after the command
            found.append((match.group(1), rest.split()))
    return found


def _help(program: str, path: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        PROGRAMS[program]([*path, "--help"])
    assert exit_info.value.code in (0, None), f"{program} {' '.join(path)} --help failed"
    return out.getvalue()


def make_targets() -> set[str]:
    """Targets the Makefile defines (rules at the start of a line)."""
    text = MAKEFILE.read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, flags=re.MULTILINE))


def problems(program: str, words: list[str], targets: set[str]) -> list[str]:
    """What is wrong with one command: unknown subcommands, options or make targets."""
    shown = " ".join([program, *words])
    if program == "make":
        named = [w for w in words if not w.startswith("-") and "=" not in w]
        return [f"`{shown}`: no make target {w!r}" for w in named if w not in targets]
    path: list[str] = []
    usage = _help(program, path)
    for word in words:
        choices = _CHOICES.search(usage.split("\n\n", 1)[0])
        if choices is None or not _SUBCOMMAND.match(word):
            break
        if word not in choices.group(1).split(","):
            return [f"`{shown}`: {word!r} is not one of {{{choices.group(1)}}}"]
        path.append(word)
        usage = _help(program, path)
    options = [w.split("=", 1)[0] for w in words if w.startswith("--")]
    return [f"`{shown}`: {program} {' '.join(path)} has no {o}" for o in options if o not in usage]


def test_every_alert_links_to_a_heading_of_the_runbook() -> None:
    rules = yaml.safe_load(RULES.read_text())
    headings = anchors(RUNBOOK.read_text())
    alerts = [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]
    assert alerts
    for rule in alerts:
        url = rule["annotations"].get("runbook_url")
        assert url, f"{rule['alert']} has no runbook_url"
        page, _, anchor = url.partition("#")
        assert page == "docs/runbook.md", f"{rule['alert']}: {url} is not docs/runbook.md"
        assert anchor in headings, f"{rule['alert']}: no heading of docs/runbook.md for #{anchor}"


def test_the_runbooks_own_links_resolve() -> None:
    text = RUNBOOK.read_text()
    headings = anchors(text)
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert sorted(set(links) - headings) == []


def test_the_anchor_rules_are_githubs() -> None:
    assert github_anchor("A user locked out (inspect and unblock)") == (
        "a-user-locked-out-inspect-and-unblock"
    )
    assert github_anchor("Signing-key rotation and compromise") == (
        "signing-key-rotation-and-compromise"
    )
    assert anchors("## Steps\n```\n## not a heading\n```\n## Steps\n") == {"steps", "steps-1"}


def test_every_command_of_the_runbook_exists() -> None:
    found = commands(RUNBOOK.read_text())
    named = {(program, tuple(words[:2])) for program, words in found}
    # The extraction must see the commands, or this test would pass on nothing.
    assert ("bulwark-auth", ("keys", "revoke")) in named
    assert ("bulwark-api", ("flags", "list")) in named
    assert any(program == "make" for program, _ in found)
    targets = make_targets()
    wrong = [p for program, words in found for p in problems(program, words, targets)]
    assert wrong == []


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        ('bulwark-auth keys rotat --dir "$D"', "'rotat' is not one of"),
        ("bulwark-auth keys rotate --jwks-max-ages 420", "has no --jwks-max-ages"),
        ("kubectl exec deploy/bulwark-api -- bulwark-api flag list", "'flag' is not one of"),
        ("make promtools", "no make target 'promtools'"),
    ],
)
def test_a_command_that_does_not_exist_is_caught(line: str, complaint: str) -> None:
    ((program, words),) = commands(f"```sh\n{line}\n```\n")
    wrong = problems(program, words, make_targets())
    assert len(wrong) == 1
    assert complaint in wrong[0]
