"""Standard OAuth clients, unmodified, against the real auth service: openid-client (node,
v6) discovers the server (RFC 8414), runs the device authorization grant (RFC 8628) and the
authorization code grant with PKCE (RFC 7636, with RFC 9207's ``iss`` checked), refreshes and
revokes (RFC 7009); Authlib's ``OAuth2Session`` runs the code grant with PKCE and a refresh.
The person in between (sign-in, device code, consent) is played through the HTML pages by an
``httpx.Client`` that keeps cookies and fills in the forms it is served (``html_forms``)."""

from __future__ import annotations

import html
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from bulwark.auth.pages.rendering import SCOPE_DESCRIPTIONS

from .conftest import RunningStack, StackFactory
from .helpers import bearer, register
from .html_forms import decide, sign_in
from .oauth_node import NodeClient, node_or_skip
from .oauth_pages import CLIENTS_ENV, DEVICE_GRANT, WEB_REDIRECT, browser

pytestmark = pytest.mark.security(stride="S", asvs=("V10.1", "V10.4"))

REDIRECT_URI = WEB_REDIRECT  # never fetched: the test reads the Location
USER_CODE = re.compile(r"[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}")


@pytest.fixture(scope="module")
def oauth_stack(stack_factory: StackFactory) -> RunningStack:
    """A stack whose auth service knows a device client and a web client, and lets a device
    poll every second (openid-client waits the interval before each poll)."""
    return stack_factory(env={"auth": {**CLIENTS_ENV, "DEVICE_POLL_INTERVAL_SECONDS": "1"}})


@pytest.fixture(scope="module")
def node() -> str:
    return node_or_skip()


def _me(stack: RunningStack, access_token: object) -> int:
    return httpx.get(f"{stack.api_url}/v1/me", headers=bearer(access_token)).status_code


def _approve_code_request(stack: RunningStack, authorization_url: str) -> dict[str, list[str]]:
    """A new user follows ``authorization_url`` in a new browser through sign-in and consent
    (approve); return the redirect back to the client: ``location`` and its query parameters."""
    assert authorization_url.startswith(f"{stack.auth_url}/oauth2/authorize?"), authorization_url
    with browser(stack.auth_url) as person:
        consent = sign_in(person, person.get(authorization_url), register(stack.auth_url))
        assert "Web dashboard" in consent.text
        back = decide(person, consent, "approve")
    assert back.status_code == 303, (back.status_code, back.text[:500])
    location = back.headers["location"]
    assert location.startswith(f"{REDIRECT_URI}?"), location
    return {"location": [location], **parse_qs(urlsplit(location).query)}


def test_openid_client_discovers_the_server_metadata(oauth_stack: RunningStack, node: str) -> None:
    issuer = oauth_stack.auth_url
    metadata = NodeClient(node, issuer, "tv-app").run("discover")
    assert "error" not in metadata, metadata

    assert metadata["issuer"] == issuer
    assert metadata["authorization_endpoint"] == f"{issuer}/oauth2/authorize"
    assert metadata["device_authorization_endpoint"] == f"{issuer}/oauth2/device_authorization"
    assert metadata["token_endpoint"] == f"{issuer}/oauth2/token"
    assert metadata["revocation_endpoint"] == f"{issuer}/oauth2/revoke"
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    # RFC 8414 §2: REQUIRED, and the defaults of the optional ones would be wrong here
    # (grant types: authorization_code and implicit; client authentication: a secret).
    assert metadata["response_types_supported"] == ["code"]
    assert {"authorization_code", "refresh_token", DEVICE_GRANT} <= set(
        metadata["grant_types_supported"]
    )
    assert "none" in metadata["token_endpoint_auth_methods_supported"]


def test_openid_client_device_flow_gets_tokens_the_api_takes(
    oauth_stack: RunningStack, node: str
) -> None:
    tv = NodeClient(node, oauth_stack.auth_url, "tv-app")
    device = tv.start("device", "api")
    try:
        started = device.line()
        assert USER_CODE.fullmatch(started["user_code"]), started
        assert started["verification_uri"] == f"{oauth_stack.auth_url}/device"
        complete = started["verification_uri_complete"]
        assert complete.startswith(f"{oauth_stack.auth_url}/device?"), complete
        assert parse_qs(urlsplit(complete).query)["user_code"] == [started["user_code"]]

        with browser(oauth_stack.auth_url) as person:
            consent = sign_in(person, person.get(complete), register(oauth_stack.auth_url))
            assert "Living-room TV" in consent.text
            assert SCOPE_DESCRIPTIONS["api"] in html.unescape(consent.text)  # the scope, in words
            done = decide(person, consent, "approve")
        assert done.status_code == 200, (done.status_code, done.text[:500])
        assert "Device connected" in done.text

        tokens = device.outcome()
    finally:
        device.stop()

    assert "error" not in tokens, tokens
    assert tokens["token_type"].lower() == "bearer"
    assert tokens["scope"] == "api"
    assert _me(oauth_stack, tokens["access_token"]) == 200
    refreshed = tv.run("refresh", tokens["refresh_token"])
    assert "error" not in refreshed, refreshed
    assert _me(oauth_stack, refreshed["access_token"]) == 200


def test_openid_client_code_flow_with_pkce_then_refresh_and_revocation(
    oauth_stack: RunningStack, node: str
) -> None:
    web = NodeClient(node, oauth_stack.auth_url, "web-app")
    request = web.run("authorize-url", REDIRECT_URI, "api")
    assert "error" not in request, request
    query = parse_qs(urlsplit(request["url"]).query)
    assert query["code_challenge_method"] == ["S256"]
    assert query["client_id"] == ["web-app"]

    back = _approve_code_request(oauth_stack, request["url"])
    assert back["state"] == [request["state"]]
    assert back["iss"] == [oauth_stack.auth_url]
    wrong_verifier = web.run("exchange", back["location"][0], "x" * 43, request["state"])
    assert wrong_verifier["error"] == "invalid_grant", wrong_verifier  # RFC 7636 §4.6

    request = web.run("authorize-url", REDIRECT_URI, "api")
    back = _approve_code_request(oauth_stack, request["url"])
    redeem = ("exchange", back["location"][0], request["code_verifier"], request["state"])
    tokens = web.run(*redeem)
    assert "error" not in tokens, tokens
    assert tokens["token_type"].lower() == "bearer"
    assert _me(oauth_stack, tokens["access_token"]) == 200

    refreshed = web.run("refresh", tokens["refresh_token"])
    assert "error" not in refreshed, refreshed
    assert refreshed["refresh_token"] != tokens["refresh_token"]
    assert _me(oauth_stack, refreshed["access_token"]) == 200

    assert web.run("revoke", refreshed["access_token"], "access_token") == {"revoked": True}
    deadline = time.monotonic() + 1.0
    while (status := _me(oauth_stack, refreshed["access_token"])) != 401:
        assert time.monotonic() < deadline, f"the revoked access token still answers {status}"
        time.sleep(0.05)

    assert web.run("revoke", refreshed["refresh_token"], "refresh_token") == {"revoked": True}
    after = web.run("refresh", refreshed["refresh_token"])
    assert after["error"] == "invalid_grant", after

    replayed = web.run(*redeem)  # RFC 6749 §4.1.2: a code used twice MUST be refused
    assert replayed["error"] == "invalid_grant", replayed


def test_authlib_code_flow_with_pkce_and_a_refresh(
    oauth_stack: RunningStack,
) -> None:
    metadata: dict[str, Any] = httpx.get(
        f"{oauth_stack.auth_url}/.well-known/oauth-authorization-server"
    ).json()
    session = OAuth2Session(
        "web-app",
        redirect_uri=REDIRECT_URI,
        scope="api",
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    with session:
        verifier = generate_token(48)
        url, state = session.create_authorization_url(
            metadata["authorization_endpoint"], code_verifier=verifier
        )
        back = _approve_code_request(oauth_stack, url)
        assert back["state"] == [state]

        token = session.fetch_token(
            metadata["token_endpoint"],
            authorization_response=back["location"][0],
            code_verifier=verifier,
        )
        assert _me(oauth_stack, token["access_token"]) == 200

        refreshed = session.refresh_token(metadata["token_endpoint"])
        assert refreshed["access_token"] != token["access_token"]
        assert _me(oauth_stack, refreshed["access_token"]) == 200
