"""Rules of the device authorization grant (RFC 8628): a TV or desktop app asks for a code
pair, its user approves the user code on another device, and the app polls the token
endpoint with the device code until the answer is known.

- Device codes are ``bdc_`` + 256 random bits; user codes are 8 letters of
  `USER_CODE_ALPHABET` (RFC 8628 §6.1: no vowels, so no words, and no look-alikes such as
  0/O or 1/I), shown as ``BCDF-GHJK``; case, spaces and dashes are ignored when typed.
  Both are stored only as their SHA-256.
- A user code is usable once: approved or denied, it no longer names anything.
- Polling faster than the interval is ``slow_down``, and the interval grows by 5 seconds
  for this and every later poll (§3.5); an approved code is exchanged once for a normal
  device session (a refresh-token family with rotation and reuse detection).
"""

import hashlib
import secrets
import uuid
from datetime import timedelta

import asyncpg
import msgspec

from bulwark.auth.device import queries
from bulwark.auth.keys import SigningKeys
from bulwark.auth.oauth.clients import OAuthClient
from bulwark.auth.oauth.errors import OAuthError
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import rules as session_rules
from bulwark.auth.sessions.rules import ClientContext
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import TokenResponse
from bulwark.common.db import Database

#: RFC 8628 §6.1's example alphabet: 20 consonants; 8 of them give 20^8 (about 2^34.6) codes.
USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8
DEVICE_CODE_PREFIX = "bdc_"
#: Seconds added to the interval at each ``slow_down`` (RFC 8628 §3.5).
SLOW_DOWN_STEP = 5
_INSERT_ATTEMPTS = 5


class DeviceAuthorization(msgspec.Struct, frozen=True):
    """The device authorization response (RFC 8628 §3.2); durations in seconds."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int


class PendingAuthorization(msgspec.Struct, frozen=True):
    """A user code awaiting its user's answer: the client that asked, and for what scope."""

    user_code: str
    client: OAuthClient
    scope: str


def _sha256(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


def normalise_user_code(typed: str) -> str | None:
    """``typed`` as stored (upper case, no dashes or spaces), or None when it cannot be a
    user code (wrong length or a character outside `USER_CODE_ALPHABET`)."""
    code = "".join(typed.split()).replace("-", "").upper()
    if len(code) != USER_CODE_LENGTH or set(code) - set(USER_CODE_ALPHABET):
        return None
    return code


def display_user_code(code: str) -> str:
    """``BCDFGHJK`` as shown to users: ``BCDF-GHJK``."""
    return f"{code[:4]}-{code[4:]}"


async def start(
    db: Database, settings: AuthSettings, client: OAuthClient, scope: str
) -> DeviceAuthorization:
    """Issue a device code and user code for ``client`` asking for ``scope`` (RFC 8628
    §3.1-3.2).

    Raises:
        DatabaseUnavailable: the database cannot answer (503).
        RuntimeError: no free user code after several draws (practically impossible).
    """
    device_code = DEVICE_CODE_PREFIX + secrets.token_urlsafe(32)
    for _ in range(_INSERT_ATTEMPTS):
        user_code = "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))
        async with db.connection() as conn:
            inserted = await queries.insert(
                conn,
                device_code_hash=_sha256(device_code),
                user_code_hash=_sha256(user_code),
                client_id=client.client_id,
                scope=scope,
                lifetime_seconds=settings.device_code_ttl,
                interval_seconds=settings.device_poll_interval,
            )
        if inserted:
            shown = display_user_code(user_code)
            return DeviceAuthorization(
                device_code=device_code,
                user_code=shown,
                verification_uri=f"{settings.issuer}/device",
                verification_uri_complete=f"{settings.issuer}/device?user_code={shown}",
                expires_in=settings.device_code_ttl,
                interval=settings.device_poll_interval,
            )
    raise RuntimeError("no free user code")


async def pending(
    db: Database, settings: AuthSettings, user_code: str
) -> PendingAuthorization | None:
    """The pending, unexpired authorization of ``user_code`` (normalised), or None when it
    is unknown, expired, already answered, or its client is no longer registered."""
    async with db.connection() as conn:
        row = await queries.find_by_user_code(conn, _sha256(user_code))
    if row is None or row["status"] != "pending" or row["expires_at"] <= row["now"]:
        return None
    client = settings.oauth_client(row["client_id"])
    if client is None:
        return None
    return PendingAuthorization(user_code=user_code, client=client, scope=row["scope"])


async def decide(
    db: Database, user_code: str, *, approved: bool, user_id: uuid.UUID, ip: str | None
) -> bool:
    """Record ``user_id``'s answer to the pending authorization of ``user_code`` (normalised);
    False when it is no longer pending (answered meanwhile, expired, unknown).

    Raises:
        DatabaseUnavailable: the database cannot answer (503; nothing recorded).
    """
    code_hash = _sha256(user_code)
    async with db.transaction() as conn:
        row = await queries.find_by_user_code(conn, code_hash, lock=True)
        if row is None or row["status"] != "pending" or row["expires_at"] <= row["now"]:
            return False
        await queries.decide(conn, code_hash, approved=approved, user_id=user_id)
        event = (
            SecurityEvent.DEVICE_AUTHORIZATION_APPROVED
            if approved
            else SecurityEvent.DEVICE_AUTHORIZATION_DENIED
        )
        await record(conn, event, user_id=user_id, ip=ip)
    return True


async def exchange(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    device_code: str,
    client: OAuthClient,
    context: ClientContext,
) -> TokenResponse:
    """One poll of the token endpoint with ``device_code`` (RFC 8628 §3.4-3.5). The
    caller's transaction must commit whatever the outcome: a poll is recorded.

    Raises:
        OAuthError: ``authorization_pending`` (not answered yet), ``slow_down`` (polled
            within the interval; the interval grows by `SLOW_DOWN_STEP`), ``access_denied``,
            ``expired_token``, or ``invalid_grant`` (unknown, another client's, or
            already exchanged).
    """
    code_hash = _sha256(device_code)
    row = await queries.lock_by_device_code(conn, code_hash)
    if row is None or row["client_id"] != client.client_id or row["status"] == "exchanged":
        raise OAuthError("invalid_grant", "The device code is invalid.")
    now = row["now"]
    if row["expires_at"] <= now:
        raise OAuthError("expired_token", "The device code has expired; start again.")
    if row["status"] == "denied":
        raise OAuthError("access_denied", "The user denied the request.")
    if row["status"] == "pending":
        interval = row["interval_seconds"]
        last = row["last_polled_at"]
        if last is not None and now - last < timedelta(seconds=interval):
            await queries.record_poll(conn, code_hash, interval + SLOW_DOWN_STEP)
            raise OAuthError("slow_down", f"Poll at most every {interval + SLOW_DOWN_STEP} s.")
        await queries.record_poll(conn, code_hash, interval)
        raise OAuthError("authorization_pending", "The user has not answered yet.")
    family_id, tokens = await session_rules.start_session(
        conn,
        settings,
        keys,
        user_id=row["user_id"],
        device_name=client.name,
        client=context,
        client_id=client.client_id,
        scope=row["scope"],
        event=SecurityEvent.DEVICE_CODE_EXCHANGED,
    )
    await queries.mark_exchanged(conn, code_hash, family_id)
    return tokens
