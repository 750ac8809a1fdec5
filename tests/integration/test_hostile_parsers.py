"""Every parser that meets client input has limits that end in a 4xx, never a 500 (issue 9):
JSON bodies, OAuth forms, query strings and headers, at the real services; and registration
and login refuse the same emails the same way.

Tokens are in ``test_forged_tokens.py``. The unit tests beside each parser fuzz it; here a
handful of each kind goes through the whole stack (server, middleware, framework, handler).
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

import httpx
import pytest

from .conftest import RunningStack
from .helpers import PASSWORD, assert_problem, bearer, login, random_email, register

pytestmark = pytest.mark.security(stride="TD", asvs=("V2.2", "V4.2"))


@pytest.fixture(scope="module")
def headers(stack: RunningStack) -> dict[str, str]:
    user = register(stack.auth_url)
    return bearer(login(stack.auth_url, user)["access_token"], user)


# --- email: one rule at registration and login --------------------------------------------

HOSTILE_EMAILS = {
    "zero-width space": "ann\u200b@example.com",
    "zero-width space at the end": "ann@example.com\u200b",
    "zero-width joiner in the domain": "ann@exam\u200dple.com",
    "bidi override": "ann\u202e@example.com",
    "soft hyphen": "an\u00adn@example.com",
    "BOM": "\ufeffann@example.com",
    "NUL": "ann\u0000@example.com",
    "newline at the end": "ann@example.com\n",
    "tab": "\tann@example.com",
    "line separator": "ann@example.com\u2028",
    "private use": "ann\ue000@example.com",
    "65-octet local part": "a" * 65 + "@example.com",
    "33 two-octet characters (66 octets)": "\u00e9" * 33 + "@example.com",
    "255-octet address": "a" * 60 + "@" + ".".join(["d" * 60] * 3) + ".example.com",
    "no domain": "ann@",
    "no dot in the domain": "ann@localhost",
    "quoted local part": '"ann smith"@example.com',
    "display name": "Ann <ann@example.com>",
    "domain literal": "ann@[127.0.0.1]",
}


@pytest.mark.security(stride="I", asvs=("V6.3",))
@pytest.mark.parametrize("case", list(HOSTILE_EMAILS))
def test_an_email_is_refused_the_same_way_at_registration_and_login(
    stack: RunningStack, case: str
) -> None:
    email = HOSTILE_EMAILS[case]
    registered = httpx.post(
        f"{stack.auth_url}/v1/users",
        json={"email": email, "password": PASSWORD, "displayName": "Ann"},
    )
    logged_in = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    at_registration = assert_problem(registered, 400)
    at_login = assert_problem(logged_in, 400)
    assert at_registration["errors"] == at_login["errors"], case
    assert [e["field"] for e in at_login["errors"]] == ["email"]  # type: ignore[attr-defined,index]


@pytest.mark.security(stride="I", asvs=("V6.3",))
def test_a_well_formed_unknown_email_is_still_the_401_of_a_wrong_password(
    stack: RunningStack,
) -> None:
    user = register(stack.auth_url)
    unknown = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": random_email(), "password": PASSWORD}
    )
    wrong = httpx.post(
        f"{stack.auth_url}/v1/auth/login", json={"email": user.email, "password": PASSWORD + "x"}
    )
    for response in (unknown, wrong):
        assert response.status_code == 401
    strip = ("request_id",)
    assert {k: v for k, v in unknown.json().items() if k not in strip} == {
        k: v for k, v in wrong.json().items() if k not in strip
    }


@pytest.mark.security(stride="S", asvs=("V1.1",))
def test_lookalike_spellings_reach_one_account_at_both(stack: RunningStack) -> None:
    user = register(stack.auth_url)
    local, _, domain = user.email.partition("@")
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if c.isalnum() else c for c in local)
    for spelling in (user.email.upper(), f"{fullwidth}@{domain}", f"  {user.email} "):
        response = httpx.post(
            f"{stack.auth_url}/v1/auth/login", json={"email": spelling, "password": PASSWORD}
        )
        assert response.status_code == 200, (spelling, response.text)
        again = httpx.post(
            f"{stack.auth_url}/v1/users",
            json={"email": spelling, "password": PASSWORD, "displayName": "Ann"},
        )
        assert_problem(again, 409)


# --- JSON bodies --------------------------------------------------------------------------

HOSTILE_BODIES: dict[str, bytes] = {
    "1000 arrays deep": b'{"title": "t", "x": ' + b"[" * 1000 + b"]" * 1000 + b"}",
    "wide array": b'{"title": "t", "x": [' + b"0," * 5000 + b"0]}",
    "many members": b"{" + b",".join(b'"k%d": null' % i for i in range(2000)) + b"}",
    "long string": b'{"title": "' + b"x" * 20000 + b'"}',
    "long unknown key": b'{"' + b"k" * 20000 + b'": 1}',
    "1e999999": b'{"title": "t", "x": 1e999999}',
    "10**5000": b'{"title": "t", "x": 1' + b"0" * 5000 + b"}",
    "NaN": b'{"title": "t", "x": NaN}',
    "lone surrogate in a field": b'{"title": "\\ud800"}',
    "lone surrogate in a key": b'{"title": "t", "\\udc00": 1}',
    "NUL in a field": b'{"title": "a\\u0000b"}',
    "raw NUL": b'{"title": "a\x00b"}',
    "invalid UTF-8": b'{"title": "\xff\xfe"}',
    "UTF-8 of a surrogate": b'{"title": "\xed\xa0\x80"}',
    "BOM": b'\xef\xbb\xbf{"title": "t"}',
    "UTF-16": '{"title": "t"}'.encode("utf-16-le"),
    "trailing garbage": b'{"title": "t"} x',
    "two documents": b'{"title": "t"}{"title": "u"}',
    "unterminated string": b'{"title": "t',
    "only a string": b'"t"',
    "only a number": b"1e999999",
    "empty object": b"{}",
}


@pytest.mark.parametrize("case", list(HOSTILE_BODIES))
def test_hostile_json_bodies_are_a_4xx_problem(
    stack: RunningStack, headers: dict[str, str], case: str
) -> None:
    body = HOSTILE_BODIES[case]
    json_headers = {"Content-Type": "application/json"}
    for method, url, extra in (
        ("POST", f"{stack.api_url}/v1/notes", headers),
        ("PATCH", f"{stack.api_url}/v1/notes/00000000-0000-0000-0000-000000000000", headers),
        ("POST", f"{stack.auth_url}/v1/users", {}),
        ("POST", f"{stack.auth_url}/v1/auth/login", {}),
    ):
        response = httpx.request(method, url, content=body, headers={**extra, **json_headers})
        assert_problem(response, 400, 404, 413, 415, 422)


# --- OAuth forms --------------------------------------------------------------------------

#: A complete request for both endpoints (the refresh token is unknown: ``invalid_grant`` at
#: the token endpoint, 200 at revocation), to which each case adds its hostile part, so that
#: only the form's limits can answer ``invalid_request``.
FORM = b"grant_type=refresh_token&refresh_token=rt-1&token=rt-1"
HOSTILE_FORMS: dict[str, bytes] = {
    "percent-escape that is not UTF-8": FORM + b"&x=%FF",
    "raw byte outside ASCII": FORM + b"&x=\xff",
    "UTF-8 of a surrogate": FORM + b"&x=%ED%A0%80",
    "NUL": FORM + b"&x=a%00b",
    "newline": FORM + b"&x=a%0Ab",
    "zero-width space": FORM + b"&x=a%E2%80%8Bb",
    "17 fields": FORM + b"".join(b"&p%d=1" % i for i in range(14)),
    "10 000 ampersands": FORM + b"&" * 10_000,
    "long value": FORM + b"&x=" + b"a" * 5000,
    "long name": FORM + b"&" + b"n" * 1000 + b"=1",
    "repeated parameter": FORM + b"&refresh_token=rt-2&token=rt-2",
    "empty name": FORM + b"&=x",
}


def test_the_base_form_is_answered_by_the_grant_not_the_parser(stack: RunningStack) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    token = httpx.post(f"{stack.auth_url}/oauth2/token", content=FORM, headers=form)
    assert (token.status_code, token.json()["error"]) == (400, "invalid_grant")
    revoke = httpx.post(f"{stack.auth_url}/oauth2/revoke", content=FORM, headers=form)
    assert revoke.status_code == 200


@pytest.mark.parametrize("case", list(HOSTILE_FORMS))
def test_hostile_forms_are_invalid_request(stack: RunningStack, case: str) -> None:
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for path in ("/oauth2/token", "/oauth2/revoke"):
        response = httpx.post(f"{stack.auth_url}{path}", content=HOSTILE_FORMS[case], headers=form)
        assert response.status_code == 400, (path, response.status_code, response.text[:200])
        assert response.json()["error"] == "invalid_request", (path, response.text)
        assert response.headers["cache-control"] == "no-store"


def test_a_form_in_another_charset_is_invalid_request(stack: RunningStack) -> None:
    response = httpx.post(
        f"{stack.auth_url}/oauth2/revoke",
        content=FORM,
        headers={"Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


# --- query strings ------------------------------------------------------------------------

#: Query strings and their answer: a parameter given twice is refused like a duplicate JSON
#: key (the framework would take one, a proxy may read the other).
HOSTILE_QUERIES: dict[str, tuple[str, int]] = {
    "limit repeated": ("limit=1&limit=2", 400),
    "cursor repeated": ("cursor=a&cursor=b", 400),
    "unknown parameter repeated": ("x=1&x=2", 400),
    "limit of 5000 digits": ("limit=" + "9" * 5000, 400),
    "limit negative": ("limit=-1", 400),
    "limit 1e999": ("limit=1e999", 400),
    "limit NaN": ("limit=NaN", 400),
    "limit with NUL": ("limit=1%00", 400),
    "limit not UTF-8": ("limit=%FF", 400),
    "cursor of 10 KB": ("cursor=" + "A" * 10_000, 400),
    "cursor not UTF-8": ("cursor=%FF%FE", 400),
    "cursor with NUL": ("cursor=%00", 400),
    "cursor of 1000 nested arrays": ("cursor=" + "W1tb" * 250, 400),
    "cursor with a third element": (
        "cursor=WyIyMDI2LTAxLTAxVDAwOjAwOjAwWiIsIjAwMDAwMDAwLTAwMDAtMDAwMC0wMDAwLTAwMDAwMDAwMDAwMCIsMV0",
        400,
    ),
    "thousand parameters": ("&".join(f"p{i}=1" for i in range(1000)), 400),
    "access_token in the query": ("access_token=x", 401),
    "cursor empty": ("cursor=", 200),
    "unknown parameter": ("x=1", 200),
}


@pytest.mark.parametrize("case", list(HOSTILE_QUERIES))
def test_hostile_query_strings_are_a_4xx_problem(
    stack: RunningStack, headers: dict[str, str], case: str
) -> None:
    query, status = HOSTILE_QUERIES[case]
    response = httpx.get(f"{stack.api_url}/v1/notes?{query}", headers=headers)
    if status == 200:
        assert response.status_code == 200, response.text
        assert "items" in response.json()
    else:
        assert_problem(response, status)


def test_raw_bytes_outside_ascii_in_a_query_string_are_a_4xx(
    stack: RunningStack, headers: dict[str, str]
) -> None:
    """httpx would percent-encode them; a hostile client sends them as they are."""
    assert _raw_get(stack.api_url, b"/v1/notes?cursor=\xff\xfe&limit=1", headers) == 400


# --- headers ------------------------------------------------------------------------------

HOSTILE_AUTHORIZATION = {
    "8 KB token": "Bearer " + "a" * 8000,
    "three dots": "Bearer a.b.c.d",
    "latin-1 bytes": "Bearer \u00ff\u00fe.\u00e9.x",
    "tab inside": "Bearer a\tb.c.d",
    "no token": "Bearer",
    "another scheme": "Basic YTpi",
    "deep header, unsigned": "Bearer " + "W1tb" * 500 + ".e30.c2ln",
}


@pytest.mark.security(stride="S", asvs=("V9.1",))
@pytest.mark.parametrize("case", list(HOSTILE_AUTHORIZATION))
def test_hostile_authorization_headers_are_401(stack: RunningStack, case: str) -> None:
    value = HOSTILE_AUTHORIZATION[case]
    for url in (f"{stack.api_url}/v1/me", f"{stack.auth_url}/v1/auth/sessions"):
        response = httpx.get(url, headers=httpx.Headers([("Authorization", value)], "latin-1"))
        assert_problem(response, 401)


@pytest.mark.security(stride="S", asvs=("V4.1",))
def test_hostile_mobile_and_forwarding_headers_do_not_break_a_request(
    stack: RunningStack, headers: dict[str, str]
) -> None:
    hostile = {
        "X-Device-Id": "d" * 4000,
        "X-App-Version": "\u00ff" * 100,
        "X-Platform": "ios" * 1000,
        "X-Forwarded-For": ", ".join(["10.0.0.1", "::1", "junk", "fe80::1%eth0"] * 200),
        "X-Request-ID": "r" * 4000,
    }
    for name, value in hostile.items():
        response = httpx.get(
            f"{stack.api_url}/v1/me",
            headers=httpx.Headers({**headers, name: value}, "latin-1"),
        )
        assert response.status_code == 200, (name, response.text)
    login_with_bad_device = httpx.post(
        f"{stack.auth_url}/v1/auth/login",
        json={"email": random_email(), "password": PASSWORD},
        headers=httpx.Headers({"X-Device-Id": "\u00ff" * 200}, "latin-1"),
    )
    assert_problem(login_with_bad_device, 400)


def _raw_get(base_url: str, target: bytes, headers: dict[str, str]) -> int:
    """Send ``GET target`` byte for byte over a socket; return the status code."""
    url = urlsplit(base_url)
    lines = [b"GET " + target + b" HTTP/1.1", f"Host: {url.netloc}".encode()]
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers.items()]
    request = b"\r\n".join([*lines, b"Connection: close", b"", b""])
    with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
        connection.sendall(request)
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    return int(response.split(b" ", 2)[1])
