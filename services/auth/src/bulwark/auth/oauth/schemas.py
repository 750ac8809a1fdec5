"""The form bodies of the OAuth endpoints, as documented (RFC 6749 Appendix B encoding).

The handlers read these forms themselves (`bulwark.auth.oauth.routes.parse_form`, whose
limits the lengths here repeat); these structs describe them in the OpenAPI document.
Unknown parameters are ignored, as RFC 6749 §3.2 requires, so none is forbidden here.
"""

from typing import Annotated, Literal

import msgspec

from bulwark.common.schemas import INVISIBLE_FREE_PATTERN

#: A required parameter's value: 1 to `MAX_FORM_VALUE_LENGTH` characters, no control
#: characters (`parse_form`).
FormValue = Annotated[
    str,
    msgspec.Meta(
        min_length=1, max_length=2048, extra_json_schema={"pattern": INVISIBLE_FREE_PATTERN}
    ),
]
#: An optional parameter's value: empty is the same as absent (RFC 6749 §3.1).
OptionalFormValue = Annotated[
    str, msgspec.Meta(max_length=2048, extra_json_schema={"pattern": INVISIBLE_FREE_PATTERN})
]


class TokenForm(msgspec.Struct, frozen=True):
    """``POST /oauth2/token``: a refresh token grant (RFC 6749 §6)."""

    grant_type: Literal["refresh_token"]
    refresh_token: FormValue
    client_id: OptionalFormValue | None = None


class RevokeForm(msgspec.Struct, frozen=True):
    """``POST /oauth2/revoke`` (RFC 7009 §2.1); ``token_type_hint``, any value, is ignored
    (§2.1: the server MAY ignore it)."""

    token: FormValue
    token_type_hint: OptionalFormValue | None = None
