"""The form bodies of the OAuth endpoints, as documented (RFC 6749 Appendix B encoding).

The handlers read these forms themselves (`bulwark.auth.oauth.routes.parse_form`, whose
limits the lengths here repeat); these structs describe them in the OpenAPI document.
Unknown parameters are ignored, as RFC 6749 §3.2 requires, so none is forbidden here;
their names and values are checked all the same.
"""

from typing import Annotated, Any, ClassVar, Literal

import msgspec

from bulwark.common.schemas import INVISIBLE_FREE_PATTERN

#: Form limits (RFC 6749 requests have a handful of short parameters; refresh tokens are
#: 48 characters). Beyond any of them the request is ``invalid_request``.
MAX_FORM_FIELDS = 16
MAX_FORM_NAME_LENGTH = 64
MAX_FORM_VALUE_LENGTH = 2048

#: A required parameter's value: 1 to `MAX_FORM_VALUE_LENGTH` characters, no control
#: characters (`parse_form`).
FormValue = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_FORM_VALUE_LENGTH,
        extra_json_schema={"pattern": INVISIBLE_FREE_PATTERN},
    ),
]
#: An optional parameter's value: empty is the same as absent (RFC 6749 §3.1).
OptionalFormValue = Annotated[
    str,
    msgspec.Meta(
        max_length=MAX_FORM_VALUE_LENGTH, extra_json_schema={"pattern": INVISIBLE_FREE_PATTERN}
    ),
]


class Form(msgspec.Struct, frozen=True):
    """Base of the form structs: ``json_schema_extra`` adds to each one's JSON Schema what
    `parse_form` checks of every parameter, named or not."""

    json_schema_extra: ClassVar[dict[str, Any]] = {
        "maxProperties": MAX_FORM_FIELDS,
        "propertyNames": {
            "minLength": 1,
            "maxLength": MAX_FORM_NAME_LENGTH,
            "pattern": INVISIBLE_FREE_PATTERN,
        },
        "additionalProperties": {
            "type": "string",
            "maxLength": MAX_FORM_VALUE_LENGTH,
            "pattern": INVISIBLE_FREE_PATTERN,
        },
    }


class TokenForm(Form, frozen=True):
    """``POST /oauth2/token``: a refresh token grant (RFC 6749 §6, ``refresh_token``), an
    authorization code grant (RFC 6749 §4.1.3 and RFC 7636 §4.5: ``code``,
    ``redirect_uri``, ``code_verifier``) or a device code grant (RFC 8628 §3.4:
    ``device_code``); ``client_id`` is required but for the app's own refresh."""

    grant_type: Literal[
        "refresh_token", "authorization_code", "urn:ietf:params:oauth:grant-type:device_code"
    ]
    refresh_token: OptionalFormValue | None = None
    code: OptionalFormValue | None = None
    redirect_uri: OptionalFormValue | None = None
    code_verifier: OptionalFormValue | None = None
    device_code: OptionalFormValue | None = None
    client_id: OptionalFormValue | None = None
    scope: OptionalFormValue | None = None


class DeviceAuthorizationForm(Form, frozen=True):
    """``POST /oauth2/device_authorization`` (RFC 8628 §3.1)."""

    client_id: FormValue
    scope: OptionalFormValue | None = None


class RevokeForm(Form, frozen=True):
    """``POST /oauth2/revoke`` (RFC 7009 §2.1): ``token``, a refresh token or an access
    token; ``token_type_hint`` (``refresh_token``, ``access_token``, any other value) is not
    needed, the two kinds having distinct forms, and is ignored (§2.1: the server MAY)."""

    token: FormValue
    token_type_hint: OptionalFormValue | None = None
    client_id: OptionalFormValue | None = None


class ServerMetadata(msgspec.Struct, frozen=True):
    """Authorization server metadata (RFC 8414 §2), as ``/.well-known/oauth-authorization-
    server`` sends it."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    device_authorization_endpoint: str
    revocation_endpoint: str
    jwks_uri: str
    scopes_supported: list[str]
    response_types_supported: list[str]
    response_modes_supported: list[str]
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    revocation_endpoint_auth_methods_supported: list[str]
    code_challenge_methods_supported: list[str]
    #: RFC 9207: authorization responses carry ``iss``.
    authorization_response_iss_parameter_supported: bool


class JwkSet(msgspec.Struct, frozen=True):
    """A JWK Set (RFC 7517 §5): the public signing keys, each a JWK object (§4)."""

    keys: list[dict[str, Any]]
