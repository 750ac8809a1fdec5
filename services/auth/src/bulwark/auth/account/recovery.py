"""Password reset (OWASP Forgot Password Cheat Sheet; NIST SP 800-63B-4 §4.2.1 on account
recovery).

A request always gets the same 202, and whether the account exists is decided after the
answer, in the background, so neither the body nor the time tells. The link and code go to
the address stored for the account, never to the address as typed: a lookalike that
normalises to an account's address reaches that account's owner, not its typist. Using the
reset sets the password, ends every session of the user (the API refuses their access
tokens within a second), spends the user's other reset tokens and any pending email change
(an intruder's), and tells the account's address. It also marks the address verified when
it was not: the mail reached it.
"""

import uuid
from dataclasses import dataclass

import asyncpg

from bulwark.auth.account import mailing, queries, tokens
from bulwark.auth.mail.catalog import MailKind
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, email_fingerprint, record
from bulwark.auth.sessions.ending import SessionEnder, end_user_sessions
from bulwark.auth.settings import AuthSettings
from bulwark.auth.users.password_policy import PasswordPolicy
from bulwark.common.db import Database
from bulwark.common.problems import BadRequest


class InvalidAccountToken(BadRequest):
    """The link or code is unknown, used, expired, or not this account's (400; one answer
    for all, so none of them can be told apart)."""

    def __init__(self) -> None:
        super().__init__("The link or code is invalid or has expired.")


async def request_reset(
    db: Database, settings: AuthSettings, *, email: str, locale: str, ip: str | None
) -> None:
    """Mail a reset to the account whose normalised address is ``email``, if there is one.

    Raises:
        DatabaseUnavailable: Postgres cannot answer (only logged: this runs after the 202).
    """
    async with db.transaction() as conn:
        user = await queries.find_user_by_email(conn, email)
        if user is None:
            await record(
                conn,
                SecurityEvent.PASSWORD_RESET_REQUESTED,
                ip=ip,
                email_fingerprint=email_fingerprint(settings.email_fingerprint_key, email),
            )
            return
        await mailing.send_link(
            conn,
            settings,
            MailKind.PASSWORD_RESET,
            user_id=user["id"],
            recipient=user["email"],  # the stored address, never the typed one
            locale=locale,
        )
        await record(conn, SecurityEvent.PASSWORD_RESET_REQUESTED, user_id=user["id"], ip=ip)


@dataclass(frozen=True)
class ResetProof:
    """What proves the reset: the link's ``token``, or the account's ``email`` and the
    mailed ``code``."""

    token: str | None = None
    email: str | None = None
    code: str | None = None


async def reset_password(
    proof: ResetProof,
    new_password: str,
    *,
    db: Database,
    settings: AuthSettings,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    ender: SessionEnder,
    locale: str,
    ip: str | None,
) -> uuid.UUID:
    """Set ``new_password`` for the account ``proof`` names; return its id.

    The new password is checked against the policy before the token is spent (a refused
    password leaves the mail usable); a wrong code counts against its token. An address
    without an account gets the same checks and the same hashing before its 400, so that
    neither the answer nor its time tells whether the address has an account.

    Raises:
        InvalidAccountToken: the proof does not hold (400).
        ValidationFailed: the new password breaks the policy (400, ``newPassword``).
        DatabaseUnavailable: Postgres cannot answer (503; nothing changed).
    """
    user = await _claimed_user(db, proof)
    if user is None:
        if proof.email is not None:  # an address without an account: the same work
            await policy.check(
                new_password, email=proof.email, display_name="", field="newPassword"
            )
            await hasher.hash(new_password)
        await _record_failure(db, None, ip)
        raise InvalidAccountToken
    await policy.check(
        new_password, email=user["email"], display_name=user["display_name"], field="newPassword"
    )
    password_hash = await hasher.hash(new_password)
    async with db.transaction() as conn:
        if proof.token is not None:
            spent = await tokens.spend_link(conn, tokens.Purpose.PASSWORD_RESET, proof.token)
        else:
            spent = await tokens.spend_code(
                conn,
                user_id=user["id"],
                purpose=tokens.Purpose.PASSWORD_RESET,
                code=proof.code or "",
                code_key=settings.email_fingerprint_key,
            )
        if spent is None or spent.user_id != user["id"]:
            await record(conn, SecurityEvent.ACCOUNT_CODE_FAILED, user_id=user["id"], ip=ip)
            ended: list[uuid.UUID] | None = None
        else:
            await queries.set_password_hash(conn, user["id"], password_hash)
            # A reset is how a user locks an intruder out: the intruder's pending email
            # change dies with the old password (the old address's undo link stays).
            await tokens.spend_all(
                conn, user["id"], tokens.Purpose.PASSWORD_RESET, tokens.Purpose.EMAIL_CHANGE
            )
            # The mail reached the address: it is verified too, so an account refused at
            # login for want of verification (UNVERIFIED_LOGIN=deny) whose link has expired
            # has a way back without signing in.
            if not user["email_verified"] and await queries.mark_verified(
                conn, user["id"], spent.email
            ):
                await record(conn, SecurityEvent.EMAIL_VERIFIED, user_id=user["id"], ip=ip)
            ended = await end_user_sessions(conn, user["id"], "password_reset")
            await record(conn, SecurityEvent.PASSWORD_RESET, user_id=user["id"], ip=ip)
            await mailing.queue(
                conn,
                settings,
                MailKind.PASSWORD_CHANGED,
                user_id=user["id"],
                recipient=user["email"],
                locale=locale,
            )
    if ended is None:  # the wrong code's count is committed before the answer
        raise InvalidAccountToken
    await ender.publish(ended)
    user_id: uuid.UUID = user["id"]
    return user_id


async def _claimed_user(db: Database, proof: ResetProof) -> asyncpg.Record | None:
    """The live account the proof names, before anything is spent: the link's owner, or
    the account of ``email`` (its code is checked when spent)."""
    if proof.token is not None:
        owner = await tokens.owner_of_link(db, tokens.Purpose.PASSWORD_RESET, proof.token)
        return None if owner is None else await queries.find_user(db, owner)
    if proof.email is None or proof.code is None:
        return None
    return await queries.find_user_by_email(db, proof.email)


async def _record_failure(db: Database, user_id: uuid.UUID | None, ip: str | None) -> None:
    await record(db, SecurityEvent.ACCOUNT_CODE_FAILED, user_id=user_id, ip=ip)
