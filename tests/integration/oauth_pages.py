"""A browser's part in the OAuth flows, played over HTTP: sign in on the pages, approve or
deny a device code or an authorization request. Cookies are kept as a browser keeps them;
each form's ``csrf_token`` is read from the page that rendered it."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.integration.helpers import MobileUser
from tests.integration.html_forms import forms

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TV = {
    "client_id": "tv-app",
    "name": "Living-room TV",
    "grant_types": [DEVICE_GRANT, "refresh_token"],
    "scopes": ["api"],
}
WEB_REDIRECT = "http://127.0.0.1:9/callback"
WEB = {
    "client_id": "web-app",
    "name": "Web dashboard",
    "grant_types": ["authorization_code", "refresh_token"],
    "scopes": ["api"],
    "redirect_uris": [WEB_REDIRECT],
}
#: The auth service's environment for a stack with both test clients registered.
CLIENTS_ENV = {"OAUTH_CLIENTS": json.dumps([TV, WEB])}


def csrf_of(page: httpx.Response) -> str:
    """The ``csrf_token`` of the form on ``page``."""
    tokens = [f.inputs["csrf_token"] for f in forms(page.text).values() if "csrf_token" in f.inputs]
    assert tokens, page.text[:500]
    return tokens[0]


def hidden_fields(page: httpx.Response) -> dict[str, str]:
    """The inputs of ``page``'s forms but the CSRF token, by name (on the consent page, the
    authorization request it carries)."""
    return {
        name: value
        for found in forms(page.text).values()
        for name, value in found.inputs.items()
        if name != "csrf_token"
    }


@contextmanager
def browser(auth_url: str) -> Iterator[httpx.Client]:
    """An HTTP client that keeps cookies and never follows redirects by itself."""
    with httpx.Client(base_url=auth_url, follow_redirects=False, timeout=10) as client:
        yield client


def sign_in(client: httpx.Client, user: MobileUser, next_page: str = "/device") -> httpx.Response:
    """Sign ``user`` in on the pages; return the answer to the form (303 on success)."""
    form_page = client.get("/signin", params={"next": next_page})
    assert form_page.status_code == 200, form_page.text
    return client.post(
        "/signin",
        data={
            "email": user.email,
            "password": user.password,
            "next": next_page,
            "csrf_token": csrf_of(form_page),
        },
    )


def start_device_flow(auth_url: str, client_id: str = "tv-app") -> dict[str, object]:
    """``POST /oauth2/device_authorization`` (asserting 200); the response body."""
    response = httpx.post(f"{auth_url}/oauth2/device_authorization", data={"client_id": client_id})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def poll(auth_url: str, device_code: object, client_id: str = "tv-app") -> httpx.Response:
    """One poll of the token endpoint with a device code."""
    return httpx.post(
        f"{auth_url}/oauth2/token",
        data={"grant_type": DEVICE_GRANT, "device_code": str(device_code), "client_id": client_id},
    )


def answer_device_code(client: httpx.Client, user_code: str, decision: str) -> httpx.Response:
    """Open the consent page of ``user_code`` and press ``decision`` (approve or deny)."""
    consent = client.get("/device", params={"user_code": user_code})
    assert consent.status_code == 200, consent.text
    return client.post(
        "/device",
        data={"user_code": user_code, "decision": decision, "csrf_token": csrf_of(consent)},
    )


def pkce_pair() -> tuple[str, str]:
    """A fresh PKCE ``(code_verifier, code_challenge)`` with S256 (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def query_of(location: str) -> dict[str, str]:
    """The query parameters of a redirect ``location``, each given once."""
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}
