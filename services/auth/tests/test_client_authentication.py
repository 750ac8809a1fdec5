"""Client authentication of public clients (RFC 6749 §2.3, §5.2): credentials are refused
with a challenge, never ignored; an unknown client is invalid_client."""

import json

import pytest

from bulwark.auth.oauth.client_authentication import client_authentication
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.settings import AuthSettings, from_env

pytestmark = pytest.mark.security(stride="S", asvs=("V10.4",))

TV = {"client_id": "tv-app", "name": "TV", "grant_types": ["refresh_token"]}


@pytest.fixture
def settings() -> AuthSettings:
    return from_env({"DATABASE_URL": "postgresql://x/y", "OAUTH_CLIENTS": json.dumps([TV])})


def _refusal(
    settings: AuthSettings, authorization: list[str], params: dict[str, str]
) -> OAuthError:
    with pytest.raises(OAuthError) as refused:
        client_authentication(authorization, params, settings)
    return refused.value


def test_a_named_or_implied_registered_client_is_accepted(settings: AuthSettings) -> None:
    assert client_authentication([], {}, settings).client_id == settings.client_id
    assert client_authentication([], {"client_id": "tv-app"}, settings).client_id == "tv-app"


def test_http_basic_credentials_are_invalid_client_with_a_basic_challenge(
    settings: AuthSettings,
) -> None:
    for header in ("Basic dHYtYXBwOnNlY3JldA==", "basic dHYtYXBwOg=="):
        refused = _refusal(settings, [header], {"client_id": "tv-app"})
        assert (refused.error, refused.status) == ("invalid_client", 401)
        assert refused.headers == {"WWW-Authenticate": 'Basic realm="bulwark"'}


def test_another_scheme_is_invalid_client_challenged_in_that_scheme(
    settings: AuthSettings,
) -> None:
    refused = _refusal(settings, ["Digest username=x"], {})
    assert (refused.error, refused.status) == ("invalid_client", 401)
    assert refused.headers == {"WWW-Authenticate": 'Digest realm="bulwark"'}


def test_a_bearer_token_is_not_client_authentication_and_is_ignored(
    settings: AuthSettings,
) -> None:
    # An app's HTTP client may attach its access token to every request, refreshes included.
    client = client_authentication(["Bearer eyJhbGciOi.x.y"], {}, settings)
    assert client.client_id == settings.client_id


def test_a_client_secret_or_an_unknown_client_is_invalid_client_with_a_challenge(
    settings: AuthSettings,
) -> None:
    for params in ({"client_id": "tv-app", "client_secret": "s"}, {"client_id": "nobody"}):
        refused = _refusal(settings, [], params)
        assert (refused.error, refused.status) == ("invalid_client", 401), params
        assert refused.headers == {"WWW-Authenticate": 'Basic realm="bulwark"'}


def test_two_credentials_or_a_malformed_header_are_invalid_request(
    settings: AuthSettings,
) -> None:
    cases = [
        (["Basic a", "Basic b"], {}),
        (["Basic dHYtYXBwOnM="], {"client_secret": "s"}),
        (['"Basic" x'], {}),
        ([""], {}),
    ]
    for authorization, params in cases:
        refused = _refusal(settings, authorization, params)
        assert (refused.error, refused.status) == ("invalid_request", 400), authorization
        assert refused.headers == {}
