"""Problem responses: every error is problem+json with a request id, naming no internals."""

import msgspec
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from bulwark.common.http import RequestContextMiddleware
from bulwark.common.problems import NotFound, exception_handlers
from bulwark.common.schemas import Schema


class Thing(Schema, frozen=True):
    display_name: str


@post("/things")
async def create(data: JSONBody[Thing]) -> Thing:
    return data


@get("/missing")
async def missing() -> None:
    raise NotFound("No such thing.")


@get("/crash")
async def crash() -> None:
    raise RuntimeError('relation "users" does not exist at SELECT password_hash')


def _client() -> TestClient[Litestar]:
    app = Litestar([create, missing, crash], exception_handlers=exception_handlers)
    return TestClient(RequestContextMiddleware(app))  # type: ignore[arg-type]


def test_unknown_fields_are_named_in_camel_case() -> None:
    with _client() as client:
        response = client.post("/things", json={"displayName": "x", "isAdmin": True})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["errors"] == [
        {"field": "isAdmin", "message": "Object contains unknown field `isAdmin`"}
    ]
    assert body["request_id"] == response.headers["x-request-id"]


def test_unexpected_errors_are_generic() -> None:
    with _client() as client:
        response = client.get("/crash")
    assert response.status_code == 500
    assert "users" not in response.text
    assert "SELECT" not in response.text
    assert msgspec.json.decode(response.content)["detail"] == "Unexpected error."


def test_problem_subclasses_render_their_status() -> None:
    with _client() as client:
        response = client.get("/missing", headers={"X-Request-ID": "req-1"})
    assert response.status_code == 404
    assert response.json()["detail"] == "No such thing."
    assert response.json()["request_id"] == "req-1"
