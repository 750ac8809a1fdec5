"""Verifying the account's address: a link and a 6-digit code mailed at registration (and on
request), single-use, for ``EMAIL_VERIFICATION_TTL`` (24 h). Access tokens minted after it
carry ``email_verified: true`` (docs/account.md)."""

import uuid

from bulwark.auth.account import mailing, queries, tokens
from bulwark.auth.account.recovery import InvalidAccountToken
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.settings import AuthSettings
from bulwark.common.db import Database, Queryable


async def send_verification(
    conn: Queryable,
    settings: AuthSettings,
    *,
    user_id: uuid.UUID,
    email: str,
    locale: str,
    ip: str | None,
) -> None:
    """In the caller's transaction, issue a verification token for ``email`` and queue its
    mail (earlier verification mails stop working)."""
    await mailing.send_link(
        conn, settings, MailKind.VERIFY_EMAIL, user_id=user_id, recipient=email, locale=locale
    )
    await record(conn, SecurityEvent.EMAIL_VERIFICATION_SENT, user_id=user_id, ip=ip)


async def resend(
    db: Database, settings: AuthSettings, *, user_id: uuid.UUID, locale: str, ip: str | None
) -> bool:
    """Mail a new verification to ``user_id``'s address; False (nothing sent) when it is
    already verified.

    Raises:
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    async with db.transaction() as conn:
        user = await queries.find_user(conn, user_id)
        if user is None or user["email_verified"]:
            return False
        await send_verification(
            conn, settings, user_id=user_id, email=user["email"], locale=locale, ip=ip
        )
    return True


async def verify(
    db: Database,
    settings: AuthSettings,
    *,
    link_token: str | None,
    code: str | None,
    user_id: uuid.UUID | None,
    ip: str | None,
) -> uuid.UUID:
    """Use a verification link token, or the code of the signed-in ``user_id``; return the
    verified account.

    Raises:
        InvalidAccountToken: unknown, used, expired, wrong, or sent to an address the account
            no longer has (400); a wrong code counts against its token.
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    async with db.transaction() as conn:
        if link_token is not None:
            spent = await tokens.spend_link(conn, tokens.Purpose.VERIFY_EMAIL, link_token)
        elif user_id is not None and code is not None:
            spent = await tokens.spend_code(
                conn,
                user_id=user_id,
                purpose=tokens.Purpose.VERIFY_EMAIL,
                code=code,
                code_key=settings.email_fingerprint_key,
            )
        else:
            spent = None
        verified = spent is not None and await queries.mark_verified(
            conn, spent.user_id, spent.email
        )
        if spent is None or not verified:
            await record(conn, SecurityEvent.ACCOUNT_CODE_FAILED, user_id=user_id, ip=ip)
        else:
            await record(conn, SecurityEvent.EMAIL_VERIFIED, user_id=spent.user_id, ip=ip)
    if spent is None or not verified:
        raise InvalidAccountToken
    return spent.user_id
