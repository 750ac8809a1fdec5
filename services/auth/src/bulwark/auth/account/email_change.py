"""Changing the account's address (OWASP Authentication Cheat Sheet, "Changing A User's
Registered Email Address").

The user proves the password; the new address gets a link and a code, and the account keeps
its old address until one of them is used. Then the new address is the account's (and
verified), and the old address gets a notice with an undo link valid
``EMAIL_CHANGE_UNDO_SECONDS`` (7 days): undoing gives the account its old address back, ends
every session, disables the password and mails a password reset there, since whoever changed
it knew the password.
"""

import uuid

from bulwark.auth.account import mailing, queries, tokens
from bulwark.auth.account.password_change import reauthenticate
from bulwark.auth.account.recovery import InvalidAccountToken
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions.ending import SessionEnder, end_user_sessions
from bulwark.auth.settings import AuthSettings
from bulwark.common.db import Database
from bulwark.common.problems import Conflict


async def request_change(
    user_id: uuid.UUID,
    password: str,
    new_email: str,
    *,
    db: Database,
    settings: AuthSettings,
    hasher: PasswordHasher,
    locale: str,
    ip: str | None,
) -> None:
    """Mail a link and a code to ``new_email`` (normalised) that make it the account's.

    Whether another account has the address is not told here (that would let a signed-in
    user probe addresses); confirming answers 409 then.

    Raises:
        WrongPassword: the password is wrong (400, ``password``).
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    user = await reauthenticate(db, hasher, user_id, password, ip=ip, field="password")
    async with db.transaction() as conn:
        if new_email == user["email"]:
            return
        await mailing.send_link(
            conn,
            settings,
            MailKind.EMAIL_CHANGE,
            user_id=user_id,
            recipient=new_email,
            locale=locale,
        )
        await record(conn, SecurityEvent.EMAIL_CHANGE_REQUESTED, user_id=user_id, ip=ip)


async def confirm_change(
    db: Database,
    settings: AuthSettings,
    *,
    link_token: str | None,
    code: str | None,
    user_id: uuid.UUID | None,
    locale: str,
    ip: str | None,
) -> None:
    """Make the proven new address the account's, and tell the old one how to undo it.

    Raises:
        InvalidAccountToken: the link or code does not hold (400).
        Conflict: another account took the address meanwhile (409; the token is spent).
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    taken = False
    async with db.transaction() as conn:
        if link_token is not None:
            spent = await tokens.spend_link(conn, tokens.Purpose.EMAIL_CHANGE, link_token)
        elif user_id is not None and code is not None:
            spent = await tokens.spend_code(
                conn,
                user_id=user_id,
                purpose=tokens.Purpose.EMAIL_CHANGE,
                code=code,
                code_key=settings.email_fingerprint_key,
            )
        else:
            spent = None
        user = None if spent is None else await queries.find_user(conn, spent.user_id)
        if spent is None or user is None:
            await record(conn, SecurityEvent.ACCOUNT_CODE_FAILED, user_id=user_id, ip=ip)
        elif not await queries.change_email(conn, spent.user_id, spent.email):
            taken = True
        else:
            await tokens.spend_all(
                conn, spent.user_id, tokens.Purpose.PASSWORD_RESET, tokens.Purpose.VERIFY_EMAIL
            )
            await mailing.send_link(
                conn,
                settings,
                MailKind.EMAIL_CHANGED,
                user_id=spent.user_id,
                recipient=user["email"],  # the old address
                locale=locale,
                masked_email=mailing.mask_email(spent.email),
            )
            await record(conn, SecurityEvent.EMAIL_CHANGED, user_id=spent.user_id, ip=ip)
    if taken:
        raise Conflict("An account with this email already exists.")
    if spent is None or user is None:
        raise InvalidAccountToken


async def undo_change(
    db: Database,
    settings: AuthSettings,
    ender: SessionEnder,
    *,
    link_token: str,
    locale: str,
    ip: str | None,
) -> None:
    """Give the account the old address the undo link was sent to, end every session, and
    mail a password reset there.

    Raises:
        InvalidAccountToken: the link does not hold (400).
        Conflict: another account has the old address now (409).
        DatabaseUnavailable: Postgres cannot answer (503).
    """
    ended: list[uuid.UUID] = []
    taken = False
    async with db.transaction() as conn:
        spent = await tokens.spend_link(conn, tokens.Purpose.EMAIL_CHANGE_UNDO, link_token)
        if spent is None:
            await record(conn, SecurityEvent.ACCOUNT_CODE_FAILED, ip=ip)
        elif not await queries.change_email(conn, spent.user_id, spent.email):
            taken = True
        else:
            await tokens.spend_all(conn, spent.user_id, *tokens.Purpose)
            # Whoever changed the address knew the password: it stops working until the
            # mailed reset sets a new one.
            await queries.set_password_hash(conn, spent.user_id, queries.UNUSABLE_PASSWORD_HASH)
            ended = await end_user_sessions(conn, spent.user_id, "email_change_undone")
            await mailing.send_link(
                conn,
                settings,
                MailKind.PASSWORD_RESET,
                user_id=spent.user_id,
                recipient=spent.email,
                locale=locale,
            )
            await record(conn, SecurityEvent.EMAIL_CHANGE_UNDONE, user_id=spent.user_id, ip=ip)
    if taken:
        raise Conflict("Another account has this address now; contact support.")
    if spent is None:
        raise InvalidAccountToken
    await ender.publish(ended)
