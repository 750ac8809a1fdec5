"""Renders deploy/k8s's overlays once per test run with ``kubectl kustomize``."""

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
OVERLAYS = ("development", "staging", "production")


def kubectl() -> str:
    """Path of kubectl (PATH, else /usr/bin/kubectl); fails the test with what to install."""
    found = shutil.which("kubectl") or (
        "/usr/bin/kubectl" if Path("/usr/bin/kubectl").is_file() else None
    )
    if found is None:
        pytest.fail(
            "kubectl not found: the deploy/k8s tests render the overlays with "
            "`kubectl kustomize` (kubectl 1.27 or newer: https://kubernetes.io/docs/tasks/tools/)"
        )
    return found


def render(directory: Path) -> list[dict[str, Any]]:
    """The objects ``kubectl kustomize directory`` prints (fails the test on an error)."""
    result = subprocess.run(  # noqa: S603  # our own kubectl and folder
        [kubectl(), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    """Each overlay's objects, by overlay name."""
    return {name: render(K8S / "overlays" / name) for name in OVERLAYS}
