"""The login use case: the login limits, the password check, a new device session.

The order is the cheapest refusal first: the limits (one rate-limit call) before any
database work, the user lookup on a connection taken for that one statement, argon2 with no
connection held, and one transaction for the new session. The failure the limits reserve
before the password check becomes a failure only when that check ran and failed; every
other ending (the database down, a timeout, a cancelled request) gives it back
(`LoginLimits.abandoned`), so an outage never locks out the users it turned away.

With ``UNVERIFIED_LOGIN=deny`` the right password of an account whose address is not
verified is refused (403 ``email_not_verified``) after the password check, so only someone
with the password learns it, and before any session starts; it is not a failure for the
backoff.
"""

import uuid
from typing import NoReturn

import msgspec

from bulwark.auth.keys import SigningKeys
from bulwark.auth.passwords import PasswordHasher
from bulwark.auth.security_events import SecurityEvent, email_fingerprint, record
from bulwark.auth.sessions import rules
from bulwark.auth.sessions.login_limits import LoginLimits
from bulwark.auth.sessions.rules import ClientContext
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import TokenResponse
from bulwark.auth.users import queries as user_queries
from bulwark.common.db import Database, Record
from bulwark.common.metrics import count_login_failure
from bulwark.common.problems import EmailNotVerified, Unauthorized

#: The detail of a login refused for an unverified address (docs/email-verification.md).
UNVERIFIED_DETAIL = (
    "Confirm your email address first: open the link in the mail sent to it, then log in"
    " again. Without that mail, reset the password: that confirms the address too."
)


class LoginAttempt(msgspec.Struct, frozen=True):
    """One login: the normalised ``email``, the ``password`` as typed, the optional
    human-readable ``device_name`` and where the request came from."""

    email: str
    password: str
    device_name: str | None
    client: ClientContext


class LoggedIn(msgspec.Struct, frozen=True):
    """A successful login: who logged in, and the RFC 6749 §5.1 token response."""

    user_id: uuid.UUID
    tokens: TokenResponse


async def authenticate(
    attempt: LoginAttempt,
    *,
    db: Database,
    hasher: PasswordHasher,
    limits: LoginLimits,
    settings: AuthSettings,
) -> Record:
    """The user whose password ``attempt`` proves, after the login limits allowed it.

    Unknown email and wrong password get the same answer after the same argon2 work. On
    success the failure the limits reserved is still open: the caller ends it with
    ``limits.succeeded()`` once its own work is done, or ``limits.abandoned()`` if that work
    fails (`login` shows how).

    Raises:
        TooManyRequests: over a login limit, or blocked after failures (429).
        ServiceUnavailable: the limiter cannot answer and login fails closed, or the
            database cannot answer (`DatabaseUnavailable`): 503, reservation given back.
        Unauthorized: unknown email or wrong password (401; the failure is counted and
            recorded as a ``login_failed`` security event).
        EmailNotVerified: the right password, but the address is not verified and
            ``UNVERIFIED_LOGIN`` is ``deny`` (403; `_refuse_unverified`).
    """
    await limits.check()
    try:
        user = await user_queries.find_by_email(db, attempt.email)
        verified = await hasher.verify(user["password_hash"] if user else None, attempt.password)
    except BaseException:
        await limits.abandoned()
        raise
    if user is None or not verified:
        await record(
            db,
            SecurityEvent.LOGIN_FAILED,
            user_id=user["id"] if user else None,
            ip=attempt.client.ip,
            device_id=attempt.client.device_id,
            email_fingerprint=email_fingerprint(settings.email_fingerprint_key, attempt.email),
        )
        count_login_failure("invalid_credentials")
        raise Unauthorized("The email or password is incorrect.", error=None)
    if not user["email_verified"] and not settings.unverified_login:
        await _refuse_unverified(attempt, user, db=db, limits=limits)
    return user


async def _refuse_unverified(
    attempt: LoginAttempt, user: Record, *, db: Database, limits: LoginLimits
) -> NoReturn:
    """Refuse the right password of an unverified account (``UNVERIFIED_LOGIN=deny``).

    Told only to whoever has the password, after the same work as a failure. It is not a
    failure: the reservation is given back as for a success (the attempt still counts).

    Raises:
        EmailNotVerified: always (403; a ``login_refused_unverified`` security event).
        DatabaseUnavailable: the event cannot be recorded (503; reservation given back).
    """
    try:
        await record(
            db,
            SecurityEvent.LOGIN_REFUSED_UNVERIFIED,
            user_id=user["id"],
            ip=attempt.client.ip,
            device_id=attempt.client.device_id,
        )
    except BaseException:
        await limits.abandoned()
        raise
    await limits.succeeded()
    count_login_failure("email_not_verified")
    raise EmailNotVerified(UNVERIFIED_DETAIL)


async def login(
    attempt: LoginAttempt,
    *,
    db: Database,
    hasher: PasswordHasher,
    limits: LoginLimits,
    settings: AuthSettings,
    keys: SigningKeys,
) -> LoggedIn:
    """Check the password of ``attempt`` (`authenticate`) and start a device session.

    Raises:
        TooManyRequests, ServiceUnavailable, Unauthorized, EmailNotVerified: as
            `authenticate` (no session is started).
    """
    user = await authenticate(attempt, db=db, hasher=hasher, limits=limits, settings=settings)
    try:
        tokens = await _start_session(
            attempt, user, db=db, hasher=hasher, settings=settings, keys=keys
        )
    except BaseException:
        await limits.abandoned()
        raise
    await limits.succeeded()
    return LoggedIn(user_id=user["id"], tokens=tokens)


async def _start_session(
    attempt: LoginAttempt,
    user: Record,
    *,
    db: Database,
    hasher: PasswordHasher,
    settings: AuthSettings,
    keys: SigningKeys,
) -> TokenResponse:
    # A weaker hash is upgraded now that the password is known; argon2 runs before the
    # connection is taken.
    upgraded_hash = None
    if hasher.needs_rehash(user["password_hash"]):
        upgraded_hash = await hasher.hash(attempt.password)
    async with db.transaction() as conn:
        if upgraded_hash:
            await user_queries.update_password_hash(conn, user["id"], upgraded_hash)
        _, tokens = await rules.start_session(
            conn,
            settings,
            keys,
            user_id=user["id"],
            device_name=attempt.device_name,
            client=attempt.client,
        )
    return tokens
