"""Every route that takes a body, on both services, refuses a body of the wrong media type,
an oversized one (announced or chunked, answered before it is all sent) and an over-deep one
with a 4xx, and every request schema bounds its strings and lists (issue 12).

The routes are enumerated from the Litestar apps the services run, so a new route cannot be
forgotten. The RFC 6749 endpoints (under ``/oauth2/``) take forms and answer their own
refusals as ``{"error": "invalid_request"}`` (RFC 6749 §5.2); every other answer here is
problem+json (RFC 9457).
"""

from __future__ import annotations

import json
import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute

from bulwark.api.app import create_app as create_api
from bulwark.api.settings import from_env as api_settings
from bulwark.auth.app import create_app as create_auth
from bulwark.auth.settings import from_env as auth_settings

from .conftest import RunningStack
from .helpers import PROBLEM

pytestmark = pytest.mark.security(stride="TD", asvs=("V2.2", "V4.2", "V15.2"))

BODY_METHODS = ("POST", "PUT", "PATCH")
#: The RFC 6749 endpoints and the pages, which take ``application/x-www-form-urlencoded``.
FORM_PATHS = ("/oauth2/", "/signin", "/device", "/account/")
#: The pages, which answer browsers with HTML, refusals included.
PAGE_PATHS = ("/signin", "/device", "/oauth2/authorize", "/account/")
#: A path parameter's value for each of its types (the route need not find anything).
PATH_VALUES = {"uuid": str(uuid.UUID(int=0)), "str": "x", "int": "1"}
#: Routes that take raw bytes, not JSON: the local upload backend's pre-signed PUT, whose
#: bound is the Content-Length it signed (tests/integration/test_uploads.py).
RAW_BODY_ROUTES = frozenset({("api", "PUT", "/v1/upload-objects/{token:str}")})
_PATH_PARAMETER = re.compile(r"\{(\w+):(\w+)\}")
TIMEOUT = 5.0
#: The largest body limit of any route (the API's; docs/input-limits.md).
MAX_BODY = 64 * 1024


class BodyRoute(NamedTuple):
    service: str  # "auth" or "api"
    method: str
    path: str  # with its parameters filled in
    max_body: int  # bytes

    @property
    def takes_form(self) -> bool:
        return self.path.startswith(FORM_PATHS)

    @property
    def is_page(self) -> bool:
        return self.path.startswith(PAGE_PATHS)


def _litestar(asgi: object) -> Litestar:
    app = getattr(asgi, "app", None)  # RequestContextMiddleware wraps the app
    assert isinstance(app, Litestar)
    return app


def _apps(stack: RunningStack) -> dict[str, Litestar]:
    """The services' apps as they are built (no I/O: pools open in the lifespan)."""
    return {
        "auth": _litestar(create_auth(auth_settings(stack.env["auth"]))),
        "api": _litestar(create_api(api_settings(stack.env["api"]))),
    }


def _body_routes(apps: dict[str, Litestar]) -> Iterator[BodyRoute]:
    for service, app in apps.items():
        for route in app.routes:
            if not isinstance(route, HTTPRoute):
                continue
            path = _PATH_PARAMETER.sub(lambda m: PATH_VALUES[m.group(2)], route.path)
            for handler in route.route_handlers:
                for method in sorted(handler.http_methods & set(BODY_METHODS)):
                    if (service, method, route.path) in RAW_BODY_ROUTES:
                        continue
                    max_body = handler.resolve_request_max_body_size()
                    assert max_body is not None, (service, method, path)
                    assert max_body <= MAX_BODY, (service, method, path)
                    yield BodyRoute(service, method, path, max_body)


class Answer(NamedTuple):
    status: int
    content_type: str
    body: dict[str, Any]


def _exchange(url: str, route: BodyRoute, head: dict[str, str], body: bytes) -> Answer:
    """Send ``route``'s request line, ``head`` and ``body`` (possibly not all the body the
    head announces) on a fresh connection; read the answer, within `TIMEOUT`."""
    parts = urlsplit(url)
    lines = [f"{route.method} {route.path} HTTP/1.1", f"Host: {parts.netloc}"]
    lines += [f"{name}: {value}" for name, value in head.items()]
    with socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT) as conn:
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = conn.recv(65536)
            assert chunk, (route, received)
            received += chunk
        raw_head, _, rest = received.partition(b"\r\n\r\n")
        status_line, *fields = raw_head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields)}
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = conn.recv(65536)
            assert chunk, (route, received)
            rest += chunk
    content_type = headers["content-type"]
    body = json.loads(rest[:length]) if "json" in content_type else {}
    return Answer(int(status_line.split()[1]), content_type, body)


def _assert_problem(answer: Answer, status: int, route: BodyRoute) -> None:
    assert answer.status == status, (route, answer)
    assert answer.content_type.startswith(PROBLEM), (route, answer)
    assert answer.body["status"] == status, (route, answer)


def _assert_invalid_request(answer: Answer, route: BodyRoute) -> None:
    """An OAuth endpoint's ``invalid_request``, or a page's 400 page."""
    if route.is_page:
        assert answer.status == 400, (route, answer)
        assert answer.content_type.startswith("text/html"), (route, answer)
        return
    assert (answer.status, answer.body.get("error")) == (400, "invalid_request"), (route, answer)


@pytest.fixture(scope="module")
def routes(stack: RunningStack) -> list[BodyRoute]:
    found = list(_body_routes(_apps(stack)))
    # The enumeration itself is checked: it finds the routes known today.
    assert {("api", "POST", "/v1/notes"), ("auth", "POST", "/oauth2/token")} <= {
        (r.service, r.method, r.path) for r in found
    }
    return found


def _url(stack: RunningStack, route: BodyRoute) -> str:
    return stack.auth_url if route.service == "auth" else stack.api_url


def test_a_wrong_media_type_is_refused_on_every_route(
    stack: RunningStack, routes: list[BodyRoute]
) -> None:
    body = b'{"a": 1}'
    for content_type in ("text/plain", "application/xml", "application/json; charset=latin-1"):
        for route in routes:
            head = {"Content-Type": content_type, "Content-Length": str(len(body))}
            answer = _exchange(_url(stack, route), route, head, body)
            if route.takes_form:
                _assert_invalid_request(answer, route)
            else:
                _assert_problem(answer, 415, route)


def test_a_content_coding_is_415_on_every_route(
    stack: RunningStack, routes: list[BodyRoute]
) -> None:
    for coding in ("gzip", "br, identity"):
        for route in routes:
            body = b"a=1" if route.takes_form else b'{"a": 1}'
            head = {
                "Content-Type": _media_type(route),
                "Content-Encoding": coding,
                "Content-Length": str(len(body)),
            }
            _assert_problem(_exchange(_url(stack, route), route, head, body), 415, route)


def _media_type(route: BodyRoute) -> str:
    return "application/x-www-form-urlencoded" if route.takes_form else "application/json"


def test_an_announced_oversized_body_is_413_before_it_is_sent(
    stack: RunningStack, routes: list[BodyRoute]
) -> None:
    for route in routes:
        head = {"Content-Type": _media_type(route), "Content-Length": str(route.max_body + 1)}
        # Only the head and a few bytes are sent: the answer cannot wait for the rest.
        answer = _exchange(_url(stack, route), route, head, b"a=1")
        _assert_problem(answer, 413, route)
        # At the limit, the body is read (and refused for what it is, not for its size).
        head = {"Content-Type": "text/plain", "Content-Length": str(route.max_body)}
        answer = _exchange(_url(stack, route), route, head, b"a" * route.max_body)
        assert answer.status in {400, 415}, (route, answer)


def test_a_chunked_oversized_body_is_413_before_it_ends(
    stack: RunningStack, routes: list[BodyRoute]
) -> None:
    for route in routes:
        head = {"Content-Type": _media_type(route), "Transfer-Encoding": "chunked"}
        chunks = b"".join(b"%x\r\n%s\r\n" % (size, b"a" * size) for size in (route.max_body, 1))
        # One byte over the limit, and never the last chunk: the body does not end.
        answer = _exchange(_url(stack, route), route, head, chunks)
        _assert_problem(answer, 413, route)


def test_an_over_deep_or_too_wide_body_is_refused_on_every_route(
    stack: RunningStack, routes: list[BodyRoute]
) -> None:
    bodies = {
        "deep": b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}",
        "long list": b'{"a": [' + b"0," * 2000 + b"0]}",
    }
    for name, body in bodies.items():
        for route in routes:
            head = {"Content-Type": "application/json", "Content-Length": str(len(body))}
            answer = _exchange(_url(stack, route), route, head, body)
            if route.takes_form:
                _assert_invalid_request(answer, route)  # JSON is not a form
            else:
                _assert_problem(answer, 400, route)
                assert "JSON body" in answer.body["detail"], (name, route, answer)


def _unbounded(info: msgspec.inspect.Type, where: str) -> Iterator[str]:
    """Where ``info`` (a request schema's type) admits a string, bytes, list or map of no
    maximum length."""
    if isinstance(info, msgspec.inspect.StructType):
        for field in info.fields:
            yield from _unbounded(field.type, f"{where}.{field.encode_name}")
    elif isinstance(info, msgspec.inspect.UnionType):
        for member in info.types:
            yield from _unbounded(member, where)
    elif isinstance(info, msgspec.inspect.StrType | msgspec.inspect.BytesType):
        if info.max_length is None:
            yield where
    elif isinstance(
        info,
        msgspec.inspect.ListType
        | msgspec.inspect.SetType
        | msgspec.inspect.FrozenSetType
        | msgspec.inspect.VarTupleType
        | msgspec.inspect.DictType,
    ):
        if info.max_length is None:
            yield where
        items = [info.key_type, info.value_type] if hasattr(info, "key_type") else [info.item_type]
        for item in items:
            yield from _unbounded(item, f"{where}[]")
    elif isinstance(info, msgspec.inspect.AnyType | msgspec.inspect.CustomType):
        yield where


def test_every_request_schema_bounds_its_strings_and_lists(stack: RunningStack) -> None:
    schemas = []
    for app in _apps(stack).values():
        for route in app.routes:
            for handler in getattr(route, "route_handlers", []):
                data = handler.parsed_fn_signature.parameters.get("data")
                if data is not None:
                    schemas.append(data.annotation)
    assert schemas  # the enumeration finds the bodies
    unbounded = [
        where
        for schema in schemas
        for where in _unbounded(msgspec.inspect.type_info(schema), schema.__name__)
    ]
    assert unbounded == []
