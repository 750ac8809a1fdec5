"""The append-only security event log (logins, refresh reuse and retries, device mismatches,
logouts and revocations).

Rows are written in the request's transaction where the event is part of a change, so an
event is recorded exactly when its effect is. The table refuses UPDATE, DELETE and TRUNCATE.

Each event is also written as a log line named after its type (``"event": "login_failed"``,
``"category": "security"``; docs/logs.md), so responders can query them with the requests
around them. A failed login names the email it tried only by `email_fingerprint`.
"""

import hashlib
import hmac
import uuid
from enum import StrEnum

from bulwark.common.db import Queryable
from bulwark.common.logging import get_logger

_log = get_logger("bulwark.security")
#: Hex characters kept of the HMAC (64 bits: collisions are negligible among real emails).
FINGERPRINT_HEX_CHARS = 16


class SecurityEvent(StrEnum):
    """Event types stored in ``security_events.event_type``."""

    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    # The right password of an unverified account under UNVERIFIED_LOGIN=deny: no session.
    LOGIN_REFUSED_UNVERIFIED = "login_refused_unverified"
    REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
    REFRESH_RETRY_ACCEPTED = "refresh_retry_accepted"  # a repeat within the grace window
    REFRESH_DEVICE_MISMATCH = "refresh_device_mismatch"
    SESSION_DELETED = "session_deleted"
    LOGOUT = "logout"
    LOGOUT_ALL = "logout_all"
    TOKEN_REVOKED = "token_revoked"  # noqa: S105  # an event name, not a password
    PAGE_SIGNIN_SUCCEEDED = "page_signin_succeeded"  # signed in on the pages (/signin)
    DEVICE_AUTHORIZATION_APPROVED = "device_authorization_approved"
    DEVICE_AUTHORIZATION_DENIED = "device_authorization_denied"
    DEVICE_CODE_EXCHANGED = "device_code_exchanged"  # its session started (RFC 8628 §3.5)
    AUTHORIZATION_CODE_ISSUED = "authorization_code_issued"
    AUTHORIZATION_DENIED = "authorization_denied"  # the user refused on the consent page
    AUTHORIZATION_CODE_EXCHANGED = "authorization_code_exchanged"
    AUTHORIZATION_CODE_REUSED = "authorization_code_reused"  # RFC 6749 §4.1.2
    # The account's life (docs/account.md).
    EMAIL_VERIFICATION_SENT = "email_verification_sent"
    EMAIL_VERIFIED = "email_verified"
    PASSWORD_RESET_REQUESTED = "password_reset_requested"  # noqa: S105  # an event name
    PASSWORD_RESET = "password_reset"  # noqa: S105
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    REAUTHENTICATION_FAILED = "reauthentication_failed"  # a wrong current password
    ACCOUNT_CODE_FAILED = "account_code_failed"  # a wrong or spent link or code
    EMAIL_CHANGE_REQUESTED = "email_change_requested"
    EMAIL_CHANGED = "email_changed"
    EMAIL_CHANGE_UNDONE = "email_change_undone"
    ACCOUNT_DELETED = "account_deleted"


# Events a responder looks at first: logged at warning level, the others at info.
_WARNINGS = frozenset(
    {
        SecurityEvent.LOGIN_FAILED,
        SecurityEvent.REFRESH_REUSE_DETECTED,
        SecurityEvent.REFRESH_DEVICE_MISMATCH,
        SecurityEvent.AUTHORIZATION_CODE_REUSED,
        SecurityEvent.REAUTHENTICATION_FAILED,
        SecurityEvent.ACCOUNT_CODE_FAILED,
        SecurityEvent.EMAIL_CHANGE_UNDONE,
    }
)


def email_fingerprint(key: bytes, normalised_email: str) -> str:
    """A keyed, non-reversible fingerprint of an email for the logs.

    HMAC-SHA256 (RFC 2104) of the normalised email under the deployment's
    ``EMAIL_FINGERPRINT_KEY``, as the first `FINGERPRINT_HEX_CHARS` lower-case hex
    characters. The same email gives the same fingerprint in one deployment (so "which IP
    tried which emails" can be answered), and without the key no dictionary of emails can be
    matched against it (an unkeyed hash of an email is reversible by guessing).
    """
    digest = hmac.new(key, normalised_email.encode(), hashlib.sha256).hexdigest()
    return digest[:FINGERPRINT_HEX_CHARS]


async def record(
    conn: Queryable,
    event: SecurityEvent,
    *,
    user_id: uuid.UUID | None = None,
    family_id: uuid.UUID | None = None,
    ip: str | None = None,
    device_id: str | None = None,
    email_fingerprint: str | None = None,
) -> None:
    """Append one event (time is the database's ``now()``), then log it.

    The log line: ``event`` (the type), ``category: "security"``, ``user_id``, ``family_id``,
    ``client_ip``, ``device_id``, and ``email_fingerprint`` when given (it is not stored in
    the table); the request's ``request_id`` and trace ids come from the log context.
    """
    await conn.execute(
        "INSERT INTO security_events (event_type, user_id, family_id, ip, device_id)"
        " VALUES ($1, $2, $3, $4, $5)",
        event.value,
        user_id,
        family_id,
        ip,
        device_id,
    )
    (_log.warning if event in _WARNINGS else _log.info)(
        event.value,
        category="security",
        user_id=None if user_id is None else str(user_id),
        family_id=None if family_id is None else str(family_id),
        client_ip=ip,
        device_id=device_id,
        **({} if email_fingerprint is None else {"email_fingerprint": email_fingerprint}),
    )
