"""The form bodies of the OAuth endpoints, as documented (RFC 6749 Appendix B encoding).

The handlers read these forms themselves (`bulwark.auth.oauth.routes.parse_form`, whose
limits the lengths here repeat); these structs describe them in the OpenAPI document.
Unknown parameters are ignored, as RFC 6749 §3.2 requires, so none is forbidden here.
"""

from typing import Annotated, Literal

import msgspec

#: A form parameter's value: at most `MAX_FORM_VALUE_LENGTH` characters.
FormValue = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class TokenForm(msgspec.Struct, frozen=True):
    """``POST /oauth2/token``: a refresh token grant (RFC 6749 §6)."""

    grant_type: Literal["refresh_token"]
    refresh_token: FormValue
    client_id: FormValue | None = None


class RevokeForm(msgspec.Struct, frozen=True):
    """``POST /oauth2/revoke`` (RFC 7009 §2.1); ``token_type_hint`` is accepted and ignored."""

    token: FormValue
    token_type_hint: Literal["refresh_token", "access_token"] | None = None
