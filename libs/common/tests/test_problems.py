"""Problem responses: every error is problem+json with a request id, naming no internals."""

import msgspec
import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.testing import TestClient

from bulwark.common.http import RequestContextMiddleware
from bulwark.common.problems import NotFound, exception_handlers
from bulwark.common.request_bodies import strict_json_bodies
from bulwark.common.schemas import Schema

pytestmark = pytest.mark.security(stride="I", asvs=("V16.5",))


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


def _client(**options: object) -> TestClient[Litestar]:
    app = Litestar([create, missing, crash], exception_handlers=exception_handlers, **options)  # type: ignore[arg-type]
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


def test_every_body_error_is_listed_behind_the_strict_body_hook() -> None:
    with _client(before_request=strict_json_bodies()) as client:
        response = client.post("/things?x=1", json={"isAdmin": True, "role": 1})
        valid = client.post("/things", json={"displayName": "x"})
    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"field": "isAdmin", "message": "Object contains unknown field `isAdmin`"},
        {"field": "role", "message": "Object contains unknown field `role`"},
        {"field": "displayName", "message": "Object missing required field `displayName`"},
    ]
    assert (valid.status_code, valid.json()) == (201, {"displayName": "x"})


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
