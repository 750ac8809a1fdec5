"""The compose stack of docker-compose.yml, built and run for real (``make test-containers``).

One stack per test session: its own project name, network, volumes, published port, freshly
generated passwords and signing keys (``make compose-keys``), and the stand-in images of
``standins.yml`` for postgres, redis and nginx. It is torn down (``docker-compose down -v``)
on every path, and its key folder deleted.
"""

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bulwark.devstack.net import free_port

ROOT = Path(__file__).resolve().parents[2]
SUBNET, INGRESS = "172.30.81.0/24", "172.30.81.10"  # not the default's: a dev stack may run
STANDINS = "tests/containers/standins.yml"
UP_TIMEOUT = 600  # seconds: the stand-ins' first build included
SECRET_NAMES = (
    "POSTGRES_PASSWORD",
    "AUTH_DB_PASSWORD",
    "API_DB_PASSWORD",
    "REDIS_PASSWORD",
    "EMAIL_FINGERPRINT_KEY",
)


@dataclass(frozen=True)
class Stack:
    """A running compose stack: ``compose`` is the command prefix, ``url`` the ingress."""

    project: str
    compose: tuple[str, ...]
    url: str
    prometheus_url: str
    tag: str
    secrets: dict[str, str]
    keys_dir: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``docker-compose <args>`` on this stack; output captured, status not checked."""
        return run([*self.compose, *args], timeout=timeout)

    def container(self, service: str) -> str:
        """The container name of ``service`` (compose v1 naming)."""
        return f"{self.project}_{service}_1"


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in the repository, output captured as text, bounded by ``timeout``."""
    return subprocess.run(  # noqa: S603 - docker, docker-compose, make: fixed arguments
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def _env_file(directory: Path, tag: str, port: int, prometheus_port: int) -> dict[str, str]:
    """Write ``directory/.env`` from .env.example with fresh secrets; return the secrets."""
    values = {name: secrets.token_hex(24) for name in SECRET_NAMES}
    values |= {
        "BULWARK_TAG": tag,
        "BULWARK_PORT": str(port),
        "PROMETHEUS_PORT": str(prometheus_port),
        "BULWARK_SUBNET": SUBNET,
        "INGRESS_ADDRESS": INGRESS,
        "KEYS_HOST_DIR": str(directory / "keys"),
    }
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        name = line.partition("=")[0]
        lines.append(f"{name}={values[name]}" if name in values and "=" in line else line)
    (directory / ".env").write_text("\n".join(lines) + "\n")
    return {name: values[name] for name in SECRET_NAMES}


def _compose_command() -> tuple[str, ...]:
    """``docker compose`` (the Compose v2 plugin) where Docker has it, else the standalone
    ``docker-compose`` (v1, what Debian packages)."""
    if run(["docker", "compose", "version"]).returncode == 0:
        return ("docker", "compose")
    if shutil.which("docker-compose") is not None:
        return ("docker-compose",)
    pytest.fail("neither `docker compose` nor docker-compose is installed")


def _remove_keys(stack_dir: Path, tag: str) -> None:
    """Delete the key folder, owned by the images' user: through a container when not root."""
    keys = stack_dir / "keys"
    shutil.rmtree(keys, ignore_errors=True)
    if keys.exists():
        run(["docker", "run", "--rm", "--user", "0", "--network", "none", "-v",
             f"{stack_dir}:/stack", "--entrypoint", "rm", f"bulwark-auth:{tag}", "-rf",
             "/stack/keys"])  # fmt: skip
    shutil.rmtree(stack_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """docker-compose.yml up with the stand-ins, torn down afterwards whatever happened."""
    if shutil.which("docker") is None:
        pytest.fail("docker is not on PATH (CI: ../shared/tools/container-host)")
    tag = os.environ.get("BULWARK_TAG", "test")
    for service in ("auth", "api", "ratelimit"):
        if run(["docker", "image", "inspect", f"bulwark-{service}:{tag}"]).returncode != 0:
            pytest.fail(f"no image bulwark-{service}:{tag}: run `make test-containers`")
    directory = tmp_path_factory.mktemp("compose")
    port, prometheus_port = free_port(), free_port()
    project = f"bulwarktest{secrets.token_hex(3)}"
    env_file = directory / ".env"
    compose = (*_compose_command(), "--project-name", project, "--env-file", str(env_file))
    stack = Stack(
        project=project,
        compose=(*compose, "--file", "docker-compose.yml", "--file", STANDINS),
        url=f"http://127.0.0.1:{port}",
        prometheus_url=f"http://127.0.0.1:{prometheus_port}",
        tag=tag,
        secrets=_env_file(directory, tag, port, prometheus_port),
        keys_dir=directory / "keys",
    )
    try:
        keys = run(["make", "--no-print-directory", "compose-keys", f"ENV_FILE={env_file}",
                    f"KEYS_HOST_DIR={stack.keys_dir}", f"TAG={tag}"])  # fmt: skip
        assert keys.returncode == 0, keys.stdout + keys.stderr
        up = stack.run("up", "--detach", "--build", timeout=UP_TIMEOUT)
        if up.returncode != 0:
            logs = stack.run("logs", "--no-color", "--tail", "40").stdout
            pytest.fail(f"docker-compose up failed:\n{up.stderr[-3000:]}\n{logs[-6000:]}")
        yield stack
    finally:
        # --profile: prometheus too, when a test started it.
        files = ("--profile", "observability", "--file", "docker-compose.yml", "--file", STANDINS)
        down = run([*compose, *files, "down", "--volumes", "--remove-orphans", "--timeout", "20"])
        _remove_keys(directory, tag)
        assert down.returncode == 0, down.stderr
