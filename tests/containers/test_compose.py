"""docker-compose.yml for real: the demo through nginx, the ingress's routing and
X-Forwarded-For, Redis's eviction policy, the migration jobs, non-root read-only
containers, images without secrets, and a graceful stop of each service as PID 1.

Marker ``containers``: run by ``make test-containers`` only (see conftest.py).
"""

import json
import re
import secrets
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.containers.conftest import INGRESS, ROOT, Stack, run

# The whole module shares one stack; its start (the stand-ins built on a first run) counts
# against the first test, so the default 120 s per test is too short.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(900)]

SERVICES = ("auth", "api", "ratelimit")
BASE = "python:3.11-slim-bookworm"
# A PEM private key: its header, then (after any RFC 1421 header lines) base64. Headers
# alone are in libraries that parse PEM (cryptography's ssh.py, libgnutls).
PEM_PRIVATE_KEY = re.compile(
    rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----\r?\n(?:[A-Za-z-]+: .*\r?\n)*\r?\n?"
    rb"[A-Za-z0-9+/=]{40}"
)


def test_the_demo_session_passes_through_the_ingress(stack: Stack) -> None:
    demo = run(
        [str(ROOT / ".venv/bin/bulwark-dev"), "demo", "--api", stack.url, "--auth", stack.url],
        timeout=120,
    )
    steps = [line for line in demo.stdout.splitlines() if re.match(r"^\s*\d+\. ", line)]
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert len(steps) >= 13
    assert all(line.endswith(" ok") for line in steps), demo.stdout


def test_the_ingress_routes_by_path_and_sets_the_forwarded_address(stack: Stack) -> None:
    request_id = f"compose-{secrets.token_hex(6)}"
    with httpx.Client(base_url=stack.url, timeout=10) as client:
        jwks = client.get(
            "/.well-known/jwks.json",
            headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": request_id},
        )
        assert jwks.status_code == 200
        assert jwks.json()["keys"]
        metadata = client.get("/.well-known/oauth-authorization-server").json()
        assert metadata["issuer"].startswith("https://")
        assert client.get("/v1/me").status_code == 401  # the API: no token
        for hidden in ("/healthz", "/readyz", "/metrics", "/schema"):
            assert client.get(hidden).status_code == 404, hidden
    logs = stack.run("logs", "--no-color", "auth").stdout
    line = next(line for line in logs.splitlines() if request_id in line)
    access = json.loads(line.partition("| ")[2])
    # The client's own address as nginx saw it: neither the forged one nor nginx's.
    assert access["client_ip"] not in {"203.0.113.9", INGRESS}
    assert access["client_ip"].startswith("172.30.81.")


def test_redis_never_evicts(stack: Stack) -> None:
    policy = stack.run("exec", "-T", "redis", "redis-cli", "config", "get", "maxmemory-policy")
    assert policy.stdout.split() == ["maxmemory-policy", "noeviction"], policy.stderr


def test_the_migration_jobs_ran_once_and_run_again_harmlessly(stack: Stack) -> None:
    for job in ("auth-migrate", "api-migrate"):
        state = run(["docker", "inspect", "-f", "{{.State.ExitCode}}", stack.container(job)])
        assert state.stdout.strip() == "0"
        again = stack.run("run", "--rm", "--no-deps", job)
        assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_services_run_as_non_root_on_a_read_only_root(stack: Stack, service: str) -> None:
    image = json.loads(run(["docker", "image", "inspect", f"bulwark-{service}:{stack.tag}"]).stdout)
    config = image[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["/app/venv/bin/bulwark-service"]  # exec form
    assert config["Labels"]["org.opencontainers.image.title"] == f"bulwark-{service}"
    container = json.loads(run(["docker", "inspect", stack.container(service)]).stdout)[0]
    assert container["HostConfig"]["ReadonlyRootfs"] is True
    assert container["State"]["Health"]["Status"] == "healthy"
    uid = run(["docker", "exec", stack.container(service), "id", "-u"])
    assert uid.stdout.strip() == "10001"
    write = run(["docker", "exec", stack.container(service), "touch", "/app/written"])
    assert write.returncode != 0
    assert "Read-only file system" in write.stderr
    # Serving (the demo ran first) changed nothing in the container's own layer but the
    # mount points docker made for the volumes (/run/secrets/bulwark-keys and its parents).
    mounts = [Path(mount["Destination"]) for mount in container["Mounts"]]
    changed = [
        line.split(" ", 1)[1]
        for line in run(["docker", "diff", container["Id"]]).stdout.splitlines()
    ]
    assert [
        path for path in changed if not any(Path(path) in (m, *m.parents) for m in mounts)
    ] == []


# What each service does at start-up when OTEL_EXPORTER_OTLP_ENDPOINT is set (as on
# Kubernetes): install the OTLP exporter. A stale opentelemetry-proto (xds-protos ships an
# older copy of its files) made that import fail and every service exit.
_START_TRACING = """
from bulwark.common.telemetry import start_tracing, tracing_settings
settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
start_tracing(settings, "bulwark-test", "test").shutdown()
print("tracing ok")
"""


@pytest.mark.parametrize("service", SERVICES)
def test_tracing_export_starts_in_every_image(stack: Stack, service: str) -> None:
    started = run(
        ["docker", "run", "--rm", "--network", "none", "--read-only",
         "--env", "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9", "--entrypoint",
         "/app/venv/bin/python", f"bulwark-{service}:{stack.tag}", "-c", _START_TRACING]
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-2000:]
    assert "tracing ok" in started.stdout


def _private_key_values(keys_dir: Path) -> list[bytes]:
    """The private parts (``d``, and RSA's primes) of every key file in ``keys_dir``."""
    values = []
    for path in [*keys_dir.glob("*.json"), *(ROOT / ".bulwark/keys").glob("*.json")]:
        jwk = json.loads(path.read_text())["private_jwk"]
        values += [jwk[name].encode() for name in ("d", "p", "q") if name in jwk]
    return values


@pytest.mark.parametrize("service", SERVICES)
def test_no_key_password_or_build_leftover_is_in_the_image(stack: Stack, service: str) -> None:
    image = f"bulwark-{service}:{stack.tag}"
    needles = [value.encode() for value in stack.secrets.values()]
    needles += _private_key_values(stack.keys_dir)
    assert len(needles) > len(stack.secrets)  # the generated key's private part is looked for
    needles += _tokens(stack)
    history = run(["docker", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image])
    metadata = (history.stdout + run(["docker", "image", "inspect", image]).stdout).encode()
    assert not [n for n in needles if n in metadata], "a secret in the image's configuration"
    assert not PEM_PRIVATE_KEY.search(metadata)
    leaks, names = _scan_own_layers(image, needles)
    assert not leaks, f"secrets in {image}: {leaks[:10]}"
    for leftover in ("src/", "opt/uv/", "root/.cache/"):  # the build stage's, uv's cache
        assert not any(name.startswith(leftover) for name in names), leftover
    assert not {"app/venv/bin/uv", "app/venv/bin/pip"} & set(names)
    assert not any(name.endswith((".env", ".key")) for name in names)  # PEM: by content
    assert any(name.startswith("app/venv/") for name in names)  # the layers were read


def _tokens(stack: Stack) -> list[bytes]:
    """The access and refresh tokens of a new account's login through the ingress."""
    email = f"layers-{secrets.token_hex(4)}@example.com"
    device = {"X-Platform": "ios", "X-App-Version": "1.0.0", "X-Device-Id": "layers-check"}
    account = {"email": email, "password": "Correct-Horse-9!", "displayName": "Layers"}
    with httpx.Client(base_url=stack.url, headers=device, timeout=10) as client:
        assert client.post("/v1/users", json=account).status_code == 201
        login = client.post(
            "/v1/auth/login", json={"email": email, "password": account["password"]}
        )
    assert login.status_code == 200, login.text
    return [login.json()["access_token"].encode(), login.json()["refresh_token"].encode()]


def _base_layers() -> int:
    """How many layers the base image has: the images' first ones, Debian's and Python's."""
    base = run(["docker", "image", "inspect", "--format", "{{json .RootFS.Layers}}", BASE])
    return len(json.loads(base.stdout))


def _scan_own_layers(image: str, needles: list[bytes]) -> tuple[list[str], list[str]]:
    """Read every layer of ``image`` above the base (``docker save``), each layer on its own,
    so that a file added and then deleted by a later layer is read as well. Returns (files
    holding a needle or a PEM private key, every path of those layers).

    The base's layers are not read: Debian's libgnutls holds a public self-test private key.
    """
    leaks: list[str] = []
    names: list[str] = []
    with tempfile.TemporaryDirectory() as directory:
        archive_path = Path(directory) / "image.tar"
        saved = run(["docker", "save", "--output", str(archive_path), image], timeout=300)
        assert saved.returncode == 0, saved.stderr
        with tarfile.open(archive_path) as archive:
            manifest = json.load(_member(archive, "manifest.json"))
            for layer in manifest[0]["Layers"][_base_layers() :]:
                with tarfile.open(fileobj=_member(archive, layer), mode="r|") as files:
                    for member in files:
                        names.append(member.name)
                        handle = files.extractfile(member) if member.isfile() else None
                        content = handle.read() if handle is not None else b""
                        if PEM_PRIVATE_KEY.search(content) or any(n in content for n in needles):
                            leaks.append(f"{layer}: {member.name}")
    return leaks, names


def _member(archive: tarfile.TarFile, name: str) -> IO[bytes]:
    handle = archive.extractfile(name)
    assert handle is not None, name
    return handle


def test_prometheus_of_the_observability_profile_scrapes_every_service(stack: Stack) -> None:
    profile = [*stack.compose, "--profile", "observability"]
    up = run([*profile, "up", "--detach", "--build", "--no-deps", "prometheus"], timeout=300)
    assert up.returncode == 0, up.stderr
    jobs: dict[str, str] = {}
    deadline = time.monotonic() + 60  # the first scrape comes within scrape_interval (15 s)
    with httpx.Client(base_url=stack.prometheus_url, timeout=5) as client:
        while time.monotonic() < deadline:
            try:
                targets = client.get("/api/v1/targets").json()["data"]["activeTargets"]
                jobs = {target["labels"]["job"]: target["health"] for target in targets}
            except httpx.HTTPError:
                pass  # not listening yet
            if len(jobs) == 3 and set(jobs.values()) == {"up"}:
                break
            time.sleep(1)
        rules = client.get("/api/v1/rules").json()["data"]["groups"]
    assert jobs == dict.fromkeys(("bulwark-api", "bulwark-auth", "bulwark-ratelimit"), "up")
    assert any(rule["name"] == "BulwarkRefreshTokenReuse" for g in rules for rule in g["rules"])


def test_each_service_stops_gracefully_on_sigterm_as_pid_1(stack: Stack) -> None:
    # Last in this module: it stops the stack's services (the fixture tears down anyway).
    for service in ("nginx", "api", "auth", "ratelimit"):
        started = time.monotonic()
        stopped = stack.run("stop", "--timeout", "20", service)
        took = time.monotonic() - started
        assert stopped.returncode == 0, stopped.stderr
        state = json.loads(run(["docker", "inspect", stack.container(service)]).stdout)[0]
        assert state["State"]["ExitCode"] == 0, service  # 137 would be the SIGKILL at 20 s
        assert took < 15, f"{service} took {took:.1f} s to stop"
    logs = stack.run("logs", "--no-color", "ratelimit").stdout
    assert '"event":"ratelimit_stopping"' in logs
