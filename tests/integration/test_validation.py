"""Bad input gets a clear 4xx problem+json naming the fields, and nothing is written."""

from __future__ import annotations

import httpx
import pytest

from .conftest import RunningStack
from .helpers import PASSWORD, bearer, login, random_email, register

pytestmark = pytest.mark.security(stride="T", asvs=("V2.2",))

PROBLEM = "application/problem+json"


def _register(stack: RunningStack, body: object) -> httpx.Response:
    return httpx.post(f"{stack.auth_url}/v1/users", json=body)


@pytest.mark.security(stride="E", asvs=("V15.3",))
def test_mass_assignment_fields_are_rejected_by_name(stack: RunningStack) -> None:
    email = random_email()
    for extra in ({"role": "admin"}, {"isAdmin": True}, {"id": "00000000-0000-0000-0000-0"}):
        body = {"email": email, "password": PASSWORD, "displayName": "Eve", **extra}
        response = _register(stack, body)
        assert response.status_code == 400
        assert response.headers["content-type"].startswith(PROBLEM)
        assert [e["field"] for e in response.json()["errors"]] == list(extra)
        assert response.json()["request_id"]
    # Nothing was written: the email is still free.
    assert (
        _register(stack, {"email": email, "password": PASSWORD, "displayName": "Eve"}).status_code
        == 201
    )


def _fields(response: httpx.Response) -> list[str]:
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return [error["field"] for error in response.json()["errors"]]


def test_every_forbidden_field_of_a_registration_is_named_at_once(stack: RunningStack) -> None:
    email = random_email()
    forbidden = {
        "role": "admin",
        "is_admin": True,
        "roles": ["admin"],
        "scope": "admin",
        "email_verified": True,
        "id": "00000000-0000-0000-0000-000000000000",
    }
    body = {"email": email, "password": PASSWORD, "displayName": "Eve", **forbidden}
    assert _fields(_register(stack, body)) == list(forbidden)
    # Unknown, invalid and missing fields together, each named once, in the body's order.
    mixed = {"email": 5, "isAdmin": True, "password": "p" * 2000}
    assert _fields(_register(stack, mixed)) == ["email", "isAdmin", "password", "displayName"]
    login_body = {"email": ["a"], "password": None, "device": "d" * 101, "remember": True}
    response = httpx.post(f"{stack.auth_url}/v1/auth/login", json=login_body)
    assert _fields(response) == ["email", "password", "device", "remember"]
    # Nothing was written, and a valid body is unaffected.
    valid = {"email": email, "password": PASSWORD, "displayName": "Eve"}
    assert _register(stack, valid).status_code == 201


def test_every_bad_field_of_a_note_is_named_at_once(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    headers = bearer(login(stack.auth_url, user)["access_token"], user)
    created = httpx.post(f"{stack.api_url}/v1/notes", json={"title": "t"}, headers=headers)
    assert created.status_code == 201
    url = f"{stack.api_url}/v1/notes/{created.json()['id']}"
    patch = {"title": 5, "owner": "someone", "body": "b" * 10_001, "createdAt": "2020", "x": 1}
    response = httpx.patch(url, json=patch, headers=headers)
    assert _fields(response) == ["title", "owner", "body", "createdAt", "x"]
    create = {"body": 1, "title": "", "pinned": True}
    response = httpx.post(f"{stack.api_url}/v1/notes", json=create, headers=headers)
    assert _fields(response) == ["body", "title", "pinned"]
    nul = {"title": "a\u0000", "body": "b\u0000"}
    assert _fields(httpx.patch(url, json=nul, headers=headers)) == ["title", "body"]
    # Nothing was changed, and a valid body is unaffected.
    current = httpx.get(url, headers=headers)
    assert current.json()["title"] == "t"
    if_match = {**headers, "If-Match": current.headers["etag"]}
    updated = httpx.patch(url, json={"title": "u"}, headers=if_match)
    assert (updated.status_code, updated.json()["title"]) == (200, "u")


@pytest.mark.security(stride="S", asvs=("V6.2",))
def test_registration_policy(stack: RunningStack) -> None:
    cases = {
        "email": [{"email": "not-an-email"}, {"email": "a" * 250 + "@example.com"}],
        "password": [
            {"password": "Short-1!"},
            {"password": "no-upper-case-1!"},
            {"password": "No-Digits-Here!"},
            {"password": "NoSpecial1234567"},
            {"password": "Aa1!" * 40},
        ],
        "displayName": [
            {"displayName": "   "},
            {"displayName": "x" * 101},
            {"displayName": "line\nbreak"},
        ],
    }
    for field, variants in cases.items():
        for variant in variants:
            body = {"email": random_email(), "password": PASSWORD, "displayName": "Ok", **variant}
            response = _register(stack, body)
            assert response.status_code == 400, variant
            assert field in {e["field"] for e in response.json()["errors"]}, variant


@pytest.mark.security(stride="S", asvs=("V1.1",))
def test_email_is_normalised_and_unique_in_any_case(stack: RunningStack) -> None:
    email = random_email()
    created = _register(
        stack, {"email": f"  {email.upper()} ", "password": PASSWORD, "displayName": "  Ann  "}
    )
    assert created.status_code == 201
    assert created.json()["email"] == email
    assert created.json()["displayName"] == "Ann"
    duplicate = _register(stack, {"email": email.title(), "password": PASSWORD, "displayName": "B"})
    assert duplicate.status_code == 409
    assert duplicate.headers["content-type"].startswith(PROBLEM)


def test_malformed_and_oversized_bodies(stack: RunningStack) -> None:
    malformed = httpx.post(
        f"{stack.auth_url}/v1/users",
        content=b'{"email": ',
        headers={"Content-Type": "application/json"},
    )
    assert malformed.status_code == 400
    assert malformed.headers["content-type"].startswith(PROBLEM)
    wrong_type = _register(stack, {"email": 5, "password": PASSWORD, "displayName": "x"})
    assert wrong_type.status_code == 400
    assert wrong_type.json()["errors"][0]["field"] == "email"
    user = register(stack.auth_url)
    headers = bearer(login(stack.auth_url, user)["access_token"], user)
    huge = httpx.post(
        f"{stack.api_url}/v1/notes", json={"title": "t", "body": "x" * 200_000}, headers=headers
    )
    assert huge.status_code == 413
    assert huge.headers["content-type"].startswith(PROBLEM)
    control = httpx.post(f"{stack.api_url}/v1/notes", json={"title": "a\u0000b"}, headers=headers)
    assert control.status_code == 400


@pytest.mark.security(stride="R", asvs=("V16.2",))
def test_request_id_is_echoed_or_generated(stack: RunningStack) -> None:
    echoed = httpx.get(f"{stack.api_url}/healthz", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    hostile = 'x" injected="1' * 20
    forged = httpx.get(f"{stack.api_url}/healthz", headers={"X-Request-ID": hostile})
    assert forged.headers["x-request-id"] != hostile
    assert len(forged.headers["x-request-id"]) == 32
    missing = httpx.get(f"{stack.api_url}/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["request_id"] == missing.headers["x-request-id"]


def test_numbers_and_booleans_are_what_the_schema_says(stack: RunningStack) -> None:
    """A body is converted strictly, as its OpenAPI schema says: ``"12"`` or ``12.0`` is not
    an integer (Litestar's own conversion would take both), and nothing is created."""
    user = register(stack.auth_url)
    headers = bearer(login(stack.auth_url, user)["access_token"], user)
    for size in ("12", 12.0, True):
        body = {"filename": "a.png", "contentType": "image/png", "size": size}
        refused = httpx.post(f"{stack.api_url}/v1/uploads", json=body, headers=headers)
        assert _fields(refused) == ["size"], (size, refused.text)
    title = httpx.post(f"{stack.api_url}/v1/notes", json={"title": 5}, headers=headers)
    assert _fields(title) == ["title"]
    accepted = {"filename": "a.png", "contentType": "image/png", "size": 12}
    assert (
        httpx.post(f"{stack.api_url}/v1/uploads", json=accepted, headers=headers).status_code == 201
    )
