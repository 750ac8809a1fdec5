"""Client authentication at the token, revocation and device authorization endpoints
(RFC 6749 §2.3, §3.2.1; RFC 7009 §2.1; RFC 8628 §3.1).

Every registered client is public (``token_endpoint_auth_method: none``, see
`bulwark.auth.oauth.clients`): it names itself with the ``client_id`` form parameter, or not
at all (then it is the mobile app, whose requests never carried one), and authenticates with
nothing. A request that offers credentials anyway is refused, never served as if they were
not there: a client that believes it has a secret is misconfigured, and accepting its
request would teach it that the secret is checked. The decisions:

- An ``Authorization: Bearer`` header is not client authentication (RFC 6750 access tokens
  are for resource servers) and is ignored: apps whose HTTP client attaches the access token
  to every request (an interceptor) must not be logged out at their next refresh.
- An ``Authorization`` header of any other scheme is an attempt to authenticate with a
  method no client is registered for: ``invalid_client`` (RFC 6749 §5.2 lists "unsupported
  authentication method" there, not under ``invalid_request``), 401 with a
  ``WWW-Authenticate`` challenge of the scheme the client used (§5.2 MUST), e.g.
  ``Basic realm="bulwark"`` for HTTP Basic.
- A ``client_secret`` form parameter (RFC 6749 §2.3.1): ``invalid_client``, 401.
- An unknown ``client_id``: ``invalid_client``, 401. §5.2 asks for the challenge only when
  the client used the header, but HTTP requires one on every 401 (RFC 9110 §15.5.2), so
  these carry ``WWW-Authenticate: Basic realm="bulwark"`` too.
- Two ``Authorization`` headers, a header together with ``client_secret``, or a header that
  is not ``scheme [credentials]``: ``invalid_request``, 400 (§5.2: "includes multiple
  credentials, utilizes more than one mechanism", "otherwise malformed").
"""

import re
from collections.abc import Mapping, Sequence

from bulwark.auth.oauth.clients import OAuthClient
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.settings import AuthSettings

REALM = "bulwark"
#: The challenge of a 401 whose client did not use the Authorization header.
BASIC_CHALLENGE = f'Basic realm="{REALM}"'
#: An auth-scheme (RFC 9110 §11.1: a token), bounded so that it can be echoed in a challenge.
_SCHEME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}\Z")


def _refused(description: str, scheme: str = "Basic") -> OAuthError:
    return OAuthError(
        "invalid_client",
        description,
        status=401,
        headers={"WWW-Authenticate": f'{scheme} realm="{REALM}"'},
    )


def _is_bearer(value: str) -> bool:
    return value.strip().partition(" ")[0].lower() == "bearer"


def client_authentication(
    authorization: Sequence[str], params: Mapping[str, str], settings: AuthSettings
) -> OAuthClient:
    """The registered public client a request comes from: its ``client_id`` form parameter,
    or the mobile app (``CLIENT_ID``) when it names none.

    ``authorization`` holds the request's ``Authorization`` header values (usually none),
    ``params`` its form parameters (`bulwark.auth.oauth.routes.parse_form`).

    Raises:
        OAuthError: ``invalid_client`` (401, with ``WWW-Authenticate``) for client
            credentials of any kind or an unknown ``client_id``; ``invalid_request`` (400)
            for more than one credential or a malformed Authorization header. See the
            module docstring for why each.
    """
    authorization = [value for value in authorization if not _is_bearer(value)]
    if len(authorization) > 1 or (authorization and "client_secret" in params):
        raise OAuthError("invalid_request", "Send at most one client authentication.")
    if authorization:
        scheme = authorization[0].strip().partition(" ")[0]
        if not _SCHEME.match(scheme):
            raise OAuthError("invalid_request", "The Authorization header is malformed.")
        raise _refused(
            "Clients are public (token_endpoint_auth_method none): send client_id in the "
            "form and no Authorization header.",
            scheme="Basic" if scheme.lower() == "basic" else scheme,
        )
    if "client_secret" in params:
        raise _refused("Clients are public (token_endpoint_auth_method none): send no secret.")
    client = settings.oauth_client(params.get("client_id", settings.client_id))
    if client is None:
        raise _refused("Unknown client.")
    return client
