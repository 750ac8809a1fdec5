"""Token revocation (RFC 7009): of a refresh token or of an access token, each ending the
session it belongs to.

RFC 7009 §2.1 lets the server revoke the whole grant when it revokes one of its tokens; a
session here is that grant, so revoking either token ends its session (its refresh family)
exactly as logout does: the family in Postgres, then the API's revoked-session set, before
the answer. ``token_type_hint`` is read as a hint only (§2.1: the server must find the token
when the hint is wrong, or absent): the two kinds cannot be confused, a refresh token being
``brt_`` and 43 base64url characters and an access token a JWS (three dot-separated parts),
so the token's form decides and the hint changes nothing. A token that is neither one of our
refresh tokens nor an access token we signed (unknown, expired, forged, another issuer's) is
ignored with the same 200 (§2.2), and so is a token issued to another client than the one
asking (§2.1 asks the server to check it): one client cannot end another's sessions, and the
answer does not tell whether the token was valid.
"""

from bulwark.auth.sessions.ending import SessionEnder
from bulwark.auth.tokens import is_refresh_token_shaped
from bulwark.common.access_tokens import AccessTokenVerifier, InvalidAccessToken


async def revoke_token(
    token: str,
    *,
    client_id: str,
    ender: SessionEnder,
    verifier: AccessTokenVerifier,
    ip: str | None,
) -> None:
    """End the session of ``token``, a refresh token or an access token (verified by
    ``verifier`` against our own keys: signature, ``iss``, ``aud``, lifetime) issued to
    ``client_id``; do nothing for any other token. ``ip`` is recorded with the
    ``token_revoked`` event.

    Raises:
        DatabaseUnavailable: the database cannot answer (503; nothing ended).
    """
    if is_refresh_token_shaped(token):
        await ender.revoke_refresh_token(token, ip, client_id=client_id)
        return
    try:
        claims = await verifier.verify(token)
    except InvalidAccessToken:
        return  # RFC 7009 §2.2: an invalid token is no error
    if claims.client_id == client_id:
        await ender.revoke_access_token(claims, ip)
