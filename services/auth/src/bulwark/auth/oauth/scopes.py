"""Scope on refresh (RFC 6749 §6): a refresh may ask for the session's scope or less, never
more.

The narrower scope applies to the new access token only: the refresh token keeps the
session's whole grant (§6: the new refresh token's scope MUST be identical to the old one's),
so a later refresh that names no scope gets all of it back.
"""

import re

#: A scope (RFC 6749 §3.3): scope-tokens of ``%x21 / %x23-5B / %x5D-7E`` separated by one space.
_SCOPE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*\Z")


class InvalidScope(Exception):  # noqa: N818  # RFC 6749 §5.2 error code "invalid_scope"
    """The requested scope is malformed or exceeds the grant; the message says which."""


def narrowed(requested: str | None, granted: str) -> str:
    """The scope of the access token a refresh asking for ``requested`` gets from a session
    granted ``granted`` (both space-separated): ``granted`` when it asks for none, else
    ``requested`` with repeats dropped.

    Raises:
        InvalidScope: ``requested`` is not RFC 6749 §3.3 syntax, or names a scope-token
            ``granted`` does not hold (§6).
    """
    if requested is None:
        return granted
    if not _SCOPE.match(requested):
        raise InvalidScope("The scope is malformed (RFC 6749 §3.3).")
    tokens = dict.fromkeys(requested.split(" "))
    if not tokens.keys() <= set(granted.split(" ")):
        raise InvalidScope("The scope exceeds what the session was granted.")
    return " ".join(tokens)
