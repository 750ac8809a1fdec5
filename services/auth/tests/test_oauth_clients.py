"""The registered clients (`OAUTH_CLIENTS`) and the user-code format of the device flow."""

import json

import pytest

from bulwark.auth.authorization.rules import redirect_location, s256
from bulwark.auth.device.rules import display_user_code, normalise_user_code
from bulwark.auth.oauth.clients import parse_clients, supported_scopes
from bulwark.common.settings import SettingsError

pytestmark = pytest.mark.security(stride="S", asvs=("V10.4",))

WEB = {
    "client_id": "web",
    "name": "Web",
    "grant_types": ["authorization_code", "refresh_token"],
    "redirect_uris": ["https://app.example.com/callback"],
}


def _parse(*clients: dict[str, object]) -> list[str]:
    parsed = parse_clients(json.dumps(list(clients)), mobile_client_id="bulwark-mobile")
    return [client.client_id for client in parsed]


def test_the_mobile_app_is_always_registered() -> None:
    assert _parse() == ["bulwark-mobile"]
    assert _parse(WEB) == ["web", "bulwark-mobile"]
    mobile = {"client_id": "bulwark-mobile", "name": "App", "grant_types": ["refresh_token"]}
    assert _parse(mobile) == ["bulwark-mobile"]


@pytest.mark.parametrize(
    "uri",
    [
        "https://app.example.com/callback",
        "http://127.0.0.1:8765/callback",
        "http://[::1]:8765/callback",
        "com.example.app:/oauth2redirect",
    ],
)
def test_redirect_uris_of_rfc_8252_are_accepted(uri: str) -> None:
    assert _parse({**WEB, "redirect_uris": [uri]}) == ["web", "bulwark-mobile"]


@pytest.mark.parametrize(
    "uri",
    [
        "http://app.example.com/callback",  # http off loopback
        "http://localhost:8765/callback",  # a name can resolve elsewhere (RFC 8252 §8.3)
        "https://app.example.com/callback#x",  # a fragment
        "javascript:alert(1)",  # not a reversed domain
        "myapp:/callback",
        "/callback",
    ],
)
def test_other_redirect_uris_stop_the_service(uri: str) -> None:
    with pytest.raises(SettingsError, match="web"):
        _parse({**WEB, "redirect_uris": [uri]})


@pytest.mark.parametrize(
    "raw",
    [
        "{}",
        "not json",
        json.dumps([{**WEB, "secret": "x"}]),  # unknown field: no confidential clients
        json.dumps([{**WEB, "grant_types": ["password"]}]),
        json.dumps([{**WEB, "scopes": ["a b"]}]),
        json.dumps([WEB, WEB]),
        json.dumps([{**WEB, "redirect_uris": []}]),  # the code grant needs one
        json.dumps([{**WEB, "grant_types": ["authorization_code"]}]),  # sessions refresh
    ],
)
def test_a_malformed_list_stops_the_service(raw: str) -> None:
    with pytest.raises(SettingsError, match="OAUTH_CLIENTS"):
        parse_clients(raw, mobile_client_id="bulwark-mobile")


def test_supported_scopes_are_every_clients() -> None:
    clients = parse_clients(json.dumps([{**WEB, "scopes": ["notes", "api"]}]), mobile_client_id="m")
    assert supported_scopes(clients) == ["api", "notes"]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [("BCDF-GHJK", "BCDFGHJK"), ("bcdf ghjk", "BCDFGHJK"), (" bcdfghjk\t", "BCDFGHJK")],
)
def test_user_codes_ignore_case_spaces_and_dashes(typed: str, stored: str) -> None:
    assert normalise_user_code(typed) == stored
    assert display_user_code(stored) == "BCDF-GHJK"


@pytest.mark.parametrize(
    "typed", ["BCDF-GHJ", "BCDF-GHJKL", "ABCD-EFGH", "BCDF-GHJ0", "\uff22CDF-GHJK"]
)
def test_a_user_code_outside_the_alphabet_is_no_code(typed: str) -> None:
    assert normalise_user_code(typed) is None


def test_the_redirect_keeps_the_clients_query_and_leaves_out_empty_values() -> None:
    location = redirect_location("https://a.example/cb?x=1", {"code": "c", "state": ""})
    assert location == "https://a.example/cb?x=1&code=c"


def test_s256_is_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
