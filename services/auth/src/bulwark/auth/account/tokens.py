"""One-time account tokens mailed to users: a link token and a 6-digit code for the app.

The link token is 256 random bits (``secrets.token_urlsafe(32)``), stored as its SHA-256.
The code is 6 random digits, stored as an HMAC-SHA256 under the deployment's
``EMAIL_FINGERPRINT_KEY`` bound to its user and purpose: a million codes are too few for a
plain hash, and a leaked table must not give codes away. A code is checked only against its
user's newest live token of the purpose, and `MAX_FAILED_CODES` wrong ones spend it (OWASP
Forgot Password Cheat Sheet). Issuing a token spends the user's earlier ones of the same
purpose: only the newest mail works.
"""

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from enum import StrEnum

import asyncpg

from bulwark.common.db import Queryable

CODE_DIGITS = 6
MAX_FAILED_CODES = 5
#: Longest link token accepted, in characters (a real one has 43).
MAX_TOKEN_LENGTH = 64


class Purpose(StrEnum):
    """What a token proves, and may be used for once."""

    VERIFY_EMAIL = "verify_email"
    PASSWORD_RESET = "password_reset"  # noqa: S105  # a purpose, not a password
    EMAIL_CHANGE = "email_change"
    EMAIL_CHANGE_UNDO = "email_change_undo"


@dataclass(frozen=True)
class IssuedToken:
    """What goes in the mail: the ``link_token`` and the ``code`` (never stored as such)."""

    link_token: str
    code: str


@dataclass(frozen=True)
class SpentToken:
    """A token just used: whose it was and the address it was sent to."""

    user_id: uuid.UUID
    email: str


def token_hash(link_token: str) -> bytes:
    return hashlib.sha256(link_token.encode()).digest()


def _code_hash(key: bytes, user_id: uuid.UUID, purpose: Purpose, code: str) -> bytes:
    message = b"\x00".join((b"account-code", purpose.value.encode(), user_id.bytes, code.encode()))
    return hmac.new(key, message, hashlib.sha256).digest()


async def issue(
    conn: Queryable,
    *,
    user_id: uuid.UUID,
    purpose: Purpose,
    email: str,
    ttl_seconds: int,
    code_key: bytes,
) -> IssuedToken:
    """A new token of ``purpose`` for ``user_id``, sent to ``email`` and valid
    ``ttl_seconds``; the user's earlier live tokens of the purpose are spent."""
    link_token = secrets.token_urlsafe(32)
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    await conn.execute(
        "UPDATE account_tokens SET used_at = now()"
        " WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user_id,
        purpose.value,
    )
    await conn.execute(
        "INSERT INTO account_tokens (token_hash, code_hash, user_id, purpose, email, expires_at)"
        " VALUES ($1, $2, $3, $4, $5, now() + make_interval(secs => $6))",
        token_hash(link_token),
        _code_hash(code_key, user_id, purpose, code),
        user_id,
        purpose.value,
        email,
        float(ttl_seconds),
    )
    return IssuedToken(link_token=link_token, code=code)


async def owner_of_link(conn: Queryable, purpose: Purpose, link_token: str) -> uuid.UUID | None:
    """The user of the live token of ``purpose`` whose link holds ``link_token``, without
    spending it; None when there is none."""
    if not link_token or len(link_token) > MAX_TOKEN_LENGTH:
        return None
    owner: uuid.UUID | None = await conn.fetchval(
        "SELECT user_id FROM account_tokens WHERE token_hash = $1 AND purpose = $2"
        " AND used_at IS NULL AND expires_at > now()",
        token_hash(link_token),
        purpose.value,
    )
    return owner


async def spend_link(conn: Queryable, purpose: Purpose, link_token: str) -> SpentToken | None:
    """Use the live token of ``purpose`` whose link holds ``link_token``; None when there is
    none (unknown, another purpose, used, expired). At most one caller ever gets it."""
    if not link_token or len(link_token) > MAX_TOKEN_LENGTH:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE account_tokens SET used_at = now()"
        " WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()"
        " RETURNING user_id, email",
        token_hash(link_token),
        purpose.value,
    )
    return None if row is None else SpentToken(user_id=row["user_id"], email=row["email"])


async def spend_code(
    conn: Queryable, *, user_id: uuid.UUID, purpose: Purpose, code: str, code_key: bytes
) -> SpentToken | None:
    """Use ``user_id``'s newest live token of ``purpose`` if ``code`` is its code; a wrong
    code counts against it (spent at `MAX_FAILED_CODES`). Call it in a transaction that
    commits either way, so that wrong codes are counted."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT token_hash, code_hash, email FROM account_tokens"
        " WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()"
        " ORDER BY created_at DESC LIMIT 1 FOR UPDATE",
        user_id,
        purpose.value,
    )
    if row is None:
        return None
    well_formed = len(code) == CODE_DIGITS and code.isascii() and code.isdigit()
    if well_formed and hmac.compare_digest(
        row["code_hash"], _code_hash(code_key, user_id, purpose, code)
    ):
        await conn.execute(
            "UPDATE account_tokens SET used_at = now() WHERE token_hash = $1", row["token_hash"]
        )
        return SpentToken(user_id=user_id, email=row["email"])
    await conn.execute(
        "UPDATE account_tokens SET failed_codes = failed_codes + 1,"
        " used_at = CASE WHEN failed_codes + 1 >= $2 THEN now() END"
        " WHERE token_hash = $1",
        row["token_hash"],
        MAX_FAILED_CODES,
    )
    return None


async def spend_all(conn: Queryable, user_id: uuid.UUID, *purposes: Purpose) -> None:
    """Spend every live token of ``user_id`` of ``purposes`` (a reset spends the others)."""
    await conn.execute(
        "UPDATE account_tokens SET used_at = now()"
        " WHERE user_id = $1 AND purpose = ANY($2::text[]) AND used_at IS NULL",
        user_id,
        [purpose.value for purpose in purposes],
    )
