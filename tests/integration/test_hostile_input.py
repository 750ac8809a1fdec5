"""Hostile input gets a 4xx problem, never a 500: NUL and control characters, deep nesting,
duplicate keys, wrong media types, forged cursors, duplicate credentials, and Unicode
spellings of one email or password."""

from __future__ import annotations

import base64
import json
import unicodedata
import uuid

import httpx
import pytest

from .conftest import RunningStack
from .helpers import PASSWORD, assert_problem, bearer, login, random_email, register

pytestmark = pytest.mark.security(stride="TD", asvs=("V2.2",))


@pytest.fixture(scope="module")
def headers(stack: RunningStack) -> dict[str, str]:
    user = register(stack.auth_url)
    return bearer(login(stack.auth_url, user)["access_token"], user)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/auth/login", {"email": "a\u0000b@example.com", "password": "x"}),
        ("/v1/auth/login", {"email": "a@example.com", "password": "x\u0000"}),
        ("/v1/users", {"email": "a@example.com", "password": PASSWORD, "displayName": "A\u0000"}),
        ("/v1/users", {"email": "a\u0000@example.com", "password": PASSWORD, "displayName": "A"}),
    ],
)
def test_nul_characters_are_400(stack: RunningStack, path: str, body: dict[str, str]) -> None:
    assert_problem(httpx.post(f"{stack.auth_url}{path}", json=body), 400)


def test_device_names_with_control_characters_are_400(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    for device in ("ph\u0000one", "Ann\n\u202eenohp", "zero\u200bwidth"):
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login",
            json={"email": user.email, "password": user.password, "device": device},
        )
        errors = assert_problem(response, 400)["errors"]
        assert [e["field"] for e in errors] == ["device"]  # type: ignore[union-attr,index]


@pytest.mark.parametrize("depth", [40, 1000, 5000])
def test_deeply_nested_json_is_400(
    stack: RunningStack, headers: dict[str, str], depth: int
) -> None:
    nested = "[" * depth + "]" * depth
    for url, extra in (
        (f"{stack.auth_url}/v1/users", {}),
        (f"{stack.auth_url}/v1/auth/login", {}),
        (f"{stack.api_url}/v1/notes", headers),
    ):
        response = httpx.post(
            url,
            content=f'{{"title": "t", "x": {nested}}}'.encode(),
            headers={**extra, "Content-Type": "application/json"},
        )
        assert_problem(response, 400)
        only_open = httpx.post(
            url, content=b"[" * depth, headers={**extra, "Content-Type": "application/json"}
        )
        assert_problem(only_open, 400)


def test_duplicate_json_keys_are_400_naming_the_key(stack: RunningStack) -> None:
    email = random_email()
    body = f'{{"email": "{email}", "password": "x", "password": "{PASSWORD}", "displayName": "A"}}'
    response = httpx.post(
        f"{stack.auth_url}/v1/users", content=body, headers={"Content-Type": "application/json"}
    )
    errors = assert_problem(response, 400)["errors"]
    assert errors == [{"field": "password", "message": "appears more than once"}]
    # Nothing was created.
    fresh = {"email": email, "password": PASSWORD, "displayName": "A"}
    assert httpx.post(f"{stack.auth_url}/v1/users", json=fresh).status_code == 201


@pytest.mark.parametrize(
    "content_type",
    [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
    ],
)
def test_json_endpoints_refuse_other_media_types(
    stack: RunningStack, headers: dict[str, str], content_type: str
) -> None:
    body = json.dumps({"title": "t"}).encode()
    response = httpx.post(
        f"{stack.api_url}/v1/notes", content=body, headers={**headers, "Content-Type": content_type}
    )
    assert_problem(response, 415)
    missing = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        content=json.dumps({"email": "a@b.co", "password": "x"}).encode(),
        headers={"Content-Type": ""},
    )
    assert_problem(missing, 415)


@pytest.mark.parametrize(
    "created_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-14:00", "2026-01-01T00:00:00"]
)
def test_forged_cursors_are_400(
    stack: RunningStack, headers: dict[str, str], created_at: str
) -> None:
    raw = json.dumps([created_at, str(uuid.uuid4())]).encode()
    cursor = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    response = httpx.get(f"{stack.api_url}/v1/notes", params={"cursor": cursor}, headers=headers)
    errors = assert_problem(response, 400)["errors"]
    assert [e["field"] for e in errors] == ["cursor"]  # type: ignore[union-attr,index]


@pytest.mark.security(stride="S", asvs=("V4.2",))
def test_two_authorization_headers_are_400(stack: RunningStack, headers: dict[str, str]) -> None:
    good = headers["Authorization"]
    for pair in ((good, "Bearer garbage"), ("Bearer garbage", good)):
        response = httpx.get(
            f"{stack.api_url}/v1/me",
            headers=httpx.Headers([("Authorization", pair[0]), ("Authorization", pair[1])]),
        )
        assert_problem(response, 400)


@pytest.mark.security(stride="I", asvs=("V16.5",))
def test_an_empty_body_names_no_internal_parameter(
    stack: RunningStack, headers: dict[str, str]
) -> None:
    response = httpx.post(f"{stack.api_url}/v1/notes", headers=headers)
    errors = assert_problem(response, 400)["errors"]
    assert errors == [{"field": "body", "message": "a JSON body is required"}]


@pytest.mark.security(stride="S", asvs=("V1.1", "V6.3"))
def test_one_mailbox_in_two_spellings_is_one_account(stack: RunningStack) -> None:
    local = f"ann-{uuid.uuid4().hex[:8]}"
    unicode_form = {"email": f"{local}@exämple.com", "password": PASSWORD, "displayName": "A"}
    idna_form = {**unicode_form, "email": f"{local}@xn--exmple-cua.com"}
    assert httpx.post(f"{stack.auth_url}/v1/users", json=unicode_form).status_code == 201
    assert_problem(httpx.post(f"{stack.auth_url}/v1/users", json=idna_form), 409)
    logged_in = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": idna_form["email"], "password": PASSWORD},
    )
    assert logged_in.status_code == 200


@pytest.mark.security(stride="S", asvs=("V1.1", "V6.2"))
def test_a_password_matches_in_any_unicode_composition(stack: RunningStack) -> None:
    password = "Crème-Brûlée-2026!"
    email = random_email()
    registered = httpx.post(
        f"{stack.auth_url}/v1/users",
        json={
            "email": email,
            "password": unicodedata.normalize("NFC", password),
            "displayName": "C",
        },
    )
    assert registered.status_code == 201
    decomposed = unicodedata.normalize("NFD", password)
    response = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": email, "password": decomposed}
    )
    assert response.status_code == 200
