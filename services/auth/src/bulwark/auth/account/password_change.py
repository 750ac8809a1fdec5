"""Changing the password of a signed-in user, who proves it with the current one (NIST
SP 800-63B-4 §3.1.1.2: a changed password needs the old one). Every other session ends; the
caller's stays; outstanding reset links and a pending email change stop working; the
account's address is told."""

import uuid

import asyncpg

from bulwark.auth.account import mailing, queries, tokens
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions.ending import SessionEnder, end_user_sessions
from bulwark.auth.settings import AuthSettings
from bulwark.auth.users.password_policy import PasswordPolicy
from bulwark.common.db import Database
from bulwark.common.problems import FieldError, Unauthorized, ValidationFailed


class WrongPassword(ValidationFailed):
    """The current password given to confirm a change is wrong (400 on ``field``: a 401
    would read as "your session ended" to the app)."""

    def __init__(self, field: str = "currentPassword") -> None:
        super().__init__([FieldError(field, "is incorrect")])


async def reauthenticate(
    db: Database,
    hasher: PasswordHasher,
    user_id: uuid.UUID,
    password: str,
    *,
    ip: str | None,
    field: str = "currentPassword",
) -> asyncpg.Record:
    """The live account ``user_id`` once ``password`` is proven to be its password.

    Raises:
        Unauthorized: the account no longer exists (401).
        WrongPassword: the password is wrong (400; recorded as ``reauthentication_failed``).
    """
    user = await queries.find_user(db, user_id)
    if user is None:
        raise Unauthorized("The session has ended.")
    if not await hasher.verify(user["password_hash"], password):
        await record(db, SecurityEvent.REAUTHENTICATION_FAILED, user_id=user_id, ip=ip)
        raise WrongPassword(field)
    return user


async def change_password(
    user_id: uuid.UUID,
    session_id: uuid.UUID,
    current_password: str,
    new_password: str,
    *,
    db: Database,
    settings: AuthSettings,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    ender: SessionEnder,
    locale: str,
    ip: str | None,
) -> None:
    """Replace the password of ``user_id`` and end its sessions but ``session_id``.

    Raises:
        WrongPassword: ``current_password`` is wrong (400).
        ValidationFailed: the new password breaks the policy (400, ``newPassword``).
        DatabaseUnavailable: Postgres cannot answer (503; nothing changed).
    """
    user = await reauthenticate(db, hasher, user_id, current_password, ip=ip)
    await policy.check(
        new_password, email=user["email"], display_name=user["display_name"], field="newPassword"
    )
    password_hash = await hasher.hash(new_password)
    async with db.transaction() as conn:
        await queries.set_password_hash(conn, user_id, password_hash)
        # Outstanding resets and a pending email change were asked with the old password.
        await tokens.spend_all(
            conn, user_id, tokens.Purpose.PASSWORD_RESET, tokens.Purpose.EMAIL_CHANGE
        )
        ended = await end_user_sessions(conn, user_id, "password_changed", keep=session_id)
        await record(conn, SecurityEvent.PASSWORD_CHANGED, user_id=user_id, ip=ip)
        await mailing.queue(
            conn,
            settings,
            MailKind.PASSWORD_CHANGED,
            user_id=user_id,
            recipient=user["email"],
            locale=locale,
        )
    await ender.publish(ended)
