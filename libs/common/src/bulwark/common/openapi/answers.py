"""What an operation can answer besides its success: ONE table, read by the document builder
(`bulwark.common.openapi.document`) for every route of both services.

A route's row keys are what the route has, found without per-route work:

- ``EVERY``: every operation (the query-string checks of `bulwark.common.request_bodies`,
  the HTTP server's refusals of a request head too slow or too large and of overload,
  `bulwark.common.http_server` and `bulwark.common.http`, and the app-version check's 426,
  `bulwark.common.app_versions.policy`);
- ``BODY``: a JSON request body (``data``), checked by `bulwark.common.request_bodies` and
  Litestar's ``request_max_body_size``; ``FORM``: a form body (``opt={"form": ...}``);
- ``PATH``: path parameters (an id that is unknown or not the caller's is a 404);
- the name of a dependency the handler takes (``caller``, ``claims``, ``db``...): what
  that dependency can refuse. A new guard or dependency adds its row here.

A handler adds what its own body raises with ``opt={"answers": (409, ...)}``.
"""

from collections.abc import Mapping
from typing import Any

EVERY = "*"
BODY = "body"
FORM = "form"
PATH = "path"

#: Dependencies that authenticate the caller with a bearer access token (RFC 6750): their
#: operations carry the ``bearerAuth`` security requirement.
AUTHENTICATING = frozenset({"caller", "claims"})

#: Status codes by route trait (module docstring).
ANSWERS: Mapping[str, tuple[int, ...]] = {
    EVERY: (400, 408, 414, 426, 431, 503),
    BODY: (400, 413, 415),
    FORM: (400, 413),
    PATH: (404,),
    # bulwark.api.caller: token, scope or unverified email, revocation, rate limit
    "caller": (401, 403, 429, 503),
    "claims": (401, 429, 503),  # bulwark.auth.deps.authenticated: the same, and Postgres
    "db": (503,),  # bulwark.common.db.DatabaseUnavailable
    "ender": (503,),  # bulwark.auth.sessions.ending: Postgres and Redis
    "idempotency_key": (409, 422),  # bulwark.api.idempotency: in flight, reused with another
}

_APP_VERSION = {
    "X-Platform": {
        "description": "The app's platform; required once a minimum app version is set "
        "(docs/app-versions.md).",
        "schema": {"type": "string", "enum": ["ios", "android"]},
    },
    "X-App-Version": {
        "description": "The app's semantic version (SemVer 2.0.0); older than the platform's "
        "minimum is 426.",
        "schema": {"type": "string", "maxLength": 64, "pattern": r"^[0-9A-Za-z.+-]+$"},
    },
}
#: Request header fields by route trait, like `ANSWERS` (``opt={"headers": ...}`` adds a
#: handler's own): each ``{name: {"description", "schema", "required"?}}``.
REQUEST_HEADERS: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    EVERY: _APP_VERSION,
    "idempotency_key": {
        "Idempotency-Key": {
            "description": "A key making this create safe to retry: an RFC 8941 string "
            "(in double quotes) of 1 to 255 printable characters (docs/safe-writes.md).",
            "schema": {"type": "string", "pattern": r'^"[ !#-\[\]-~]{1,255}"$'},
        }
    },
}
#: ``If-Match`` as the notes' writes take it (RFC 9110 §13.1.1): ``*`` or a list of entity
#: tags; only a current strong one matches (412 otherwise), and a malformed field is 400.
IF_MATCH = {
    "description": 'The note\'s current ETag, such as "3" (or *); a stale one is 412.',
    "schema": {"type": "string"},
}

_RETRY_AFTER = {
    "description": "Seconds to wait before retrying (RFC 9110 §10.2.3).",
    "required": True,
    "schema": {"type": "string", "pattern": "^[0-9]+$"},
}
_RATELIMIT = {
    "RateLimit": {
        "description": "Remaining quota per policy (draft-ietf-httpapi-ratelimit-headers).",
        "schema": {"type": "string"},
    },
    "RateLimit-Policy": {
        "description": "Quota and window per policy (draft-ietf-httpapi-ratelimit-headers).",
        "schema": {"type": "string"},
    },
}

#: Response headers of an OAuth error (RFC 6749 §5.2) by status: a 401 ``invalid_client``
#: challenges the client (``bulwark.auth.oauth.client_authentication``).
OAUTH_ERROR_HEADERS: Mapping[int, Mapping[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "A challenge of the scheme the client tried to authenticate with, "
            'Basic otherwise: Basic realm="bulwark" (RFC 6749 §5.2, RFC 9110 §15.5.2).',
            "required": True,
            "schema": {"type": "string"},
        }
    },
}

#: Description and response headers of each status an operation can answer.
STATUSES: Mapping[int, tuple[str, Mapping[str, Any]]] = {
    400: ("The request is malformed or invalid; ``errors`` names every invalid field.", {}),
    401: (
        "Missing, invalid or expired credentials.",
        {
            "WWW-Authenticate": {
                "description": "A Bearer challenge (RFC 6750 §3).",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    403: (
        "Forbidden: the access token's scope does not include the one the API needs (api), "
        "or the account's email address is not verified and this operation requires it "
        '(type urn:bulwark:problem:email-not-verified, error "email_not_verified": confirm '
        "the address, then refresh or log in again; docs/email-verification.md).",
        {
            "WWW-Authenticate": {
                "description": 'With a scope refusal only: a Bearer challenge, error="'
                'insufficient_scope" (RFC 6750 §3.1).',
                "required": False,
                "schema": {"type": "string"},
            }
        },
    ),
    404: ("No such resource visible to the caller.", {}),
    408: ("The request was not received in time.", {}),
    409: ("The request conflicts with existing state.", {}),
    412: ("If-Match does not name the resource's current ETag.", {}),
    413: ("The request body is too large.", {}),
    414: ("The request target is longer than the server accepts.", {}),
    415: ("The body is not application/json in UTF-8.", {}),
    422: ("The request is well-formed but cannot be processed as it is.", {}),
    426: ("This version of the app is no longer supported; upgrade it.", {}),
    428: ("The request must be conditional (If-Match).", {}),
    429: ("Too many requests.", {"Retry-After": _RETRY_AFTER, **_RATELIMIT}),
    431: ("The request's header fields are larger than the server accepts.", {}),
    503: (
        "A dependency is unavailable or the service is overloaded.",
        {"Retry-After": _RETRY_AFTER},
    ),
}

#: Headers a rate-limited operation may send on any answer.
RATELIMIT_HEADERS: Mapping[str, Any] = _RATELIMIT
