"""docs/threat-model.md covers every route Bulwark serves and names only tests that exist.

The routes are read from the services themselves: the HTTP routes of the auth service and
the API from their Litestar apps (in the development configuration, which mounts every
optional route: the schema viewer, the local upload backend), the gRPC methods of the rate
limiter from a running limiter's reflection service, and each service's metrics listener
by asking it. An entry of the threat model is a ``### `` heading followed by a ``Routes:``
line of backticked route keys (``auth POST /v1/auth/login``, ``ratelimit
/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``, ``api-metrics GET
/metrics``) and a table with one row per STRIDE letter. Tests are cited by pytest id
(``tests/integration/test_tokens.py::test_name``); every cited file and function must exist.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bulwark.api import app as api_app
from bulwark.api import settings as api_settings
from bulwark.auth import app as auth_app
from bulwark.auth import settings as auth_settings

from .conftest import RunningStack, StackFactory

ROOT = Path(__file__).resolve().parents[2]
THREAT_MODEL = ROOT / "docs" / "threat-model.md"
STRIDE = ("S", "T", "R", "I", "D", "E")
_TEST_ID = re.compile(r"`((?:tests|services|libs)/[\w./-]+\.py)::([\w:]+)(?:\[[^`\]]*\])?`")
_ROW = re.compile(r"^\|\s*([A-Z])\s*\|")
_PATH_PARAMETER = re.compile(r"\{(\w+):\w+\}")  # Litestar's {note_id:uuid} -> {note_id}


@dataclass
class Entry:
    """One ``###`` entry: its heading, route keys, STRIDE letters in table order, test ids."""

    heading: str
    routes: list[str] = field(default_factory=list)
    letters: list[str] = field(default_factory=list)
    tests: list[tuple[str, str]] = field(default_factory=list)


def entries(markdown: str) -> list[Entry]:
    """The entries of ``markdown``: every ``###`` heading that has a ``Routes:`` line."""
    found: list[Entry] = []
    current: Entry | None = None
    for line in markdown.splitlines():
        if line.startswith("#"):
            current = Entry(line.lstrip("#").strip()) if line.startswith("### ") else None
            if current is not None:
                found.append(current)
            continue
        if current is None:
            continue
        if line.startswith("Routes:"):
            current.routes += re.findall(r"`([^`]+)`", line)
        row = _ROW.match(line)
        if row:
            current.letters.append(row.group(1))
        current.tests += _TEST_ID.findall(line)
    return [entry for entry in found if entry.routes]


def cited_tests(markdown: str) -> set[tuple[str, str]]:
    """Every ``(file, test)`` the document cites, anywhere in it."""
    return set(_TEST_ID.findall(markdown))


def missing_tests(cited: set[tuple[str, str]]) -> list[str]:
    """The cited tests whose file or function (``Class::test`` allowed) does not exist."""
    missing = []
    for path, name in sorted(cited):
        file = ROOT / path
        if not file.is_file() or not _defines(file, name.split("::")):
            missing.append(f"{path}::{name}")
    return missing


def _defines(file: Path, names: list[str]) -> bool:
    scope: list[ast.stmt] = ast.parse(file.read_text()).body
    for position, name in enumerate(names):
        last = position == len(names) - 1
        kinds = (ast.FunctionDef, ast.AsyncFunctionDef) if last else (ast.ClassDef,)
        match = next((n for n in scope if isinstance(n, kinds) and n.name == name), None)
        if match is None:
            return False
        scope = match.body
    return True


def http_routes() -> set[str]:
    """``"<service> <METHOD> <path>"`` for every HTTP route of both apps (OPTIONS, which
    every route answers with its ``Allow`` header, left out)."""
    found = set()
    for service, module, settings in (
        ("auth", auth_app, auth_settings),
        ("api", api_app, api_settings),
    ):
        litestar = module.create_app(settings.from_env(module.DOCUMENT_ENV)).app
        for route in litestar.routes:
            path = _PATH_PARAMETER.sub(r"{\1}", route.path)
            found |= {f"{service} {method} {path}" for method in route.methods - {"OPTIONS"}}
    return found


def grpc_methods(target: str) -> set[str]:
    """``"ratelimit /<service>/<method>"`` for every method the limiter at ``target`` lists
    through gRPC reflection."""
    with grpc.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = next(
            stub.ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
        )
        services = [service.name for service in listing.list_services_response.service]
        requests = [
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=name) for name in services
        ]
        answers = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    found = set()
    for name, answer in zip(services, answers, strict=True):
        for blob in answer.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(blob)
            for service in file.service:
                if f"{file.package}.{service.name}" == name:
                    found |= {f"ratelimit /{name}/{method.name}" for method in service.method}
    return found


def metrics_routes(stack: RunningStack) -> set[str]:
    """``"<service>-metrics GET /metrics"`` for each service whose metrics listener answers."""
    found = set()
    for service in ("auth", "api", "ratelimit"):
        url = stack.config.metrics_url(service)
        if url is not None and httpx.get(url, timeout=5).status_code == 200:
            found.add(f"{service}-metrics GET /metrics")
    return found


@pytest.fixture(scope="module")
def served(stack_factory: StackFactory) -> set[str]:
    """Every route key Bulwark serves."""
    stack = stack_factory()
    return http_routes() | grpc_methods(stack.ratelimit_target) | metrics_routes(stack)


def test_every_route_has_an_entry_and_every_entry_a_route(served: set[str]) -> None:
    documented = [route for entry in entries(THREAT_MODEL.read_text()) for route in entry.routes]
    assert len(served) > 30, served  # the enumeration itself works
    assert sorted(served - set(documented)) == [], "routes with no threat-model entry"
    assert sorted(set(documented) - served) == [], "entries for routes nobody serves"
    repeated = sorted({route for route in documented if documented.count(route) > 1})
    assert repeated == [], "routes with more than one entry"


def test_every_entry_goes_through_stride_and_names_its_tests() -> None:
    for entry in entries(THREAT_MODEL.read_text()):
        assert tuple(entry.letters) == STRIDE, (entry.heading, entry.letters)
        assert entry.tests, f"{entry.heading}: no test proves its mitigations"


def test_every_cited_test_exists() -> None:
    cited = cited_tests(THREAT_MODEL.read_text())
    assert len(cited) > 20
    assert missing_tests(cited) == []


def test_the_checks_find_drift() -> None:
    """The parser sees a missing letter, an unknown test and a route key, so the tests
    above cannot pass on a document they fail to read."""
    drifted = (
        "### Login\n\nRoutes: `auth POST /v1/auth/login`\n\n| | Threat |\n|---|---|\n"
        "| S | stuffing; `tests/integration/test_login_limit.py::test_no_such_test` |\n"
    )
    [entry] = entries(drifted)
    assert entry.routes == ["auth POST /v1/auth/login"]
    assert entry.letters == ["S"]
    assert missing_tests(cited_tests(drifted)) == [
        "tests/integration/test_login_limit.py::test_no_such_test"
    ]
