"""Rules of device sessions: start one at login, rotate its refresh token, end it.

Rotation follows RFC 9700 §4.14.2: each refresh token is used once; presenting a used one
means it was copied, so the whole family is revoked (the attacker's and the user's newest
token alike) and the event recorded. One exception, for apps that resume from background
with two refreshes at once or retry one whose answer was lost: a repeat of the live token's
immediate predecessor within ``REFRESH_REUSE_GRACE_SECONDS`` gets that same live token back.
Token and family rows are locked for the rotation, so concurrent refreshes with one token
serialise, and a partial unique index keeps one unused token per family: it never forks.
"""

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg
import msgspec

from bulwark.auth.keys import SigningKeys
from bulwark.auth.oauth import scopes
from bulwark.auth.security_events import SecurityEvent, record
from bulwark.auth.sessions import queries, successors
from bulwark.auth.settings import AuthSettings
from bulwark.auth.tokens import (
    DEFAULT_SCOPE,
    TokenResponse,
    hash_refresh_token,
    is_refresh_token_shaped,
    mint_access_token,
    new_refresh_token,
)


class ClientContext(msgspec.Struct, frozen=True):
    """Where a request came from: client IP and the mobile headers (already sanitised)."""

    ip: str | None
    device_id: str | None
    platform: str | None


class RefreshRejection(StrEnum):
    """Why a refresh was refused: ``invalid_scope`` to the client for the scope, else
    ``invalid_grant``."""

    UNKNOWN = "unknown"
    REVOKED = "revoked"
    EXPIRED = "expired"
    REUSED = "reused"
    DEVICE_MISMATCH = "device_mismatch"
    DEVICE_ID_MISSING = "device_id_missing"
    INVALID_SCOPE = "invalid_scope"


class Refusal(msgspec.Struct, frozen=True):
    """A refused refresh: why, the family it ended (to list as revoked), if any, and what
    to tell the client when it is more than "the refresh token is invalid"."""

    reason: RefreshRejection
    revoked_family: uuid.UUID | None = None
    description: str | None = None


def _response(
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    client_id: str,
    scope: str,
    refresh_token: str,
    email_verified: bool,
) -> TokenResponse:
    access_token = mint_access_token(
        keys,
        issuer=settings.issuer,
        audience=settings.audience,
        client_id=client_id,
        user_id=user_id,
        family_id=family_id,
        lifetime=settings.access_token_ttl,
        scope=scope,
        email_verified=email_verified,
    )
    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106  # RFC 6750 token type, not a secret
        expires_in=settings.access_token_ttl,
        refresh_token=refresh_token,
        scope=scope,
    )


async def _issue(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    user_id: uuid.UUID,
    family_id: uuid.UUID,
    client_id: str,
    scope: str,
    now: datetime,
    absolute_expires_at: datetime,
    refresh_token: tuple[str, bytes],
) -> TokenResponse:
    token, token_hash = refresh_token
    idle_expiry = now + timedelta(seconds=settings.refresh_idle_ttl)
    await queries.insert_token(conn, family_id, token_hash, min(idle_expiry, absolute_expires_at))
    return _response(
        settings,
        keys,
        user_id=user_id,
        family_id=family_id,
        client_id=client_id,
        scope=scope,
        refresh_token=token,
        email_verified=await queries.email_verified(conn, user_id),
    )


async def start_session(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    user_id: uuid.UUID,
    device_name: str | None,
    client: ClientContext,
    client_id: str | None = None,
    scope: str = DEFAULT_SCOPE,
    event: SecurityEvent = SecurityEvent.LOGIN_SUCCEEDED,
) -> tuple[uuid.UUID, TokenResponse]:
    """Start a family for a user who just proved who they are; return its id (the tokens'
    ``sid``) and its first tokens.

    ``client_id`` is the OAuth client the session is for (default: the mobile app,
    ``CLIENT_ID``), ``scope`` what it was granted, ``event`` the security event recorded
    (a login by default; a device or code grant names its own). The family is bound to
    ``client.device_id`` (``X-Device-Id``) when the request sent one.
    """
    client_id = client_id or settings.client_id
    now: datetime = await conn.fetchval("SELECT now()")
    absolute_expires_at = now + timedelta(seconds=settings.refresh_absolute_ttl)
    family_id = await queries.insert_family(
        conn,
        user_id=user_id,
        client_id=client_id,
        device_id=client.device_id,
        device_name=device_name,
        platform=client.platform,
        ip=client.ip,
        absolute_expires_at=absolute_expires_at,
        scope=scope,
    )
    await record(
        conn,
        event,
        user_id=user_id,
        family_id=family_id,
        ip=client.ip,
        device_id=client.device_id,
    )
    tokens = await _issue(
        conn,
        settings,
        keys,
        user_id=user_id,
        family_id=family_id,
        client_id=client_id,
        scope=scope,
        now=now,
        absolute_expires_at=absolute_expires_at,
        refresh_token=new_refresh_token(),
    )
    return family_id, tokens


async def _end_family(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    client: ClientContext,
    reason: RefreshRejection,
    event: SecurityEvent,
) -> Refusal:
    family_id: uuid.UUID = row["family_id"]
    await queries.revoke_family(conn, family_id, reason.value)
    await record(
        conn,
        event,
        user_id=row["user_id"],
        family_id=family_id,
        ip=client.ip,
        device_id=client.device_id,
    )
    return Refusal(reason, revoked_family=family_id)


async def _benign_retry(
    conn: asyncpg.Connection, settings: AuthSettings, *, row: asyncpg.Record, refresh_token: str
) -> str | None:
    """The live successor of the used ``refresh_token`` when presenting it again is a benign
    repeat, or None when it is a reuse (reads only).

    A repeat is benign when the token was used at most ``refresh_reuse_grace`` seconds ago
    and its successor is still the family's live token (so it is the live token's immediate
    predecessor). The answer then carries that same successor: the family keeps exactly one
    live refresh token, and every copy of the app holds it.
    """
    now: datetime = row["now"]
    family_id: uuid.UUID = row["family_id"]
    if (
        settings.refresh_reuse_grace <= 0
        or row["successor_sealed"] is None
        or now - row["used_at"] > timedelta(seconds=settings.refresh_reuse_grace)
        or row["absolute_expires_at"] <= now
    ):
        return None
    live = await queries.live_token_hash(conn, family_id)
    if live is None or live != row["successor_hash"]:
        return None
    successor = successors.unseal(refresh_token, row["successor_sealed"], family_id)
    if successor is None or hash_refresh_token(successor) != live:
        return None
    return successor


async def _accept_retry(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    row: asyncpg.Record,
    successor: str,
    scope: str,
    client: ClientContext,
) -> TokenResponse:
    """Answer a benign repeat (`_benign_retry`) with ``successor`` and a new access token."""
    family_id: uuid.UUID = row["family_id"]
    await queries.touch_family(conn, family_id, client.ip)
    await record(
        conn,
        SecurityEvent.REFRESH_RETRY_ACCEPTED,
        user_id=row["user_id"],
        family_id=family_id,
        ip=client.ip,
        device_id=client.device_id,
    )
    return _response(
        settings,
        keys,
        user_id=row["user_id"],
        family_id=family_id,
        client_id=row["client_id"],
        scope=scope,
        refresh_token=successor,
        email_verified=await queries.email_verified(conn, row["user_id"]),
    )


def _granted_scope(requested: str | None, session_scope: str) -> str | Refusal:
    """The new access token's scope, or the refusal of a scope the session cannot give."""
    try:
        return scopes.narrowed(requested, session_scope)
    except scopes.InvalidScope as refused:
        return Refusal(RefreshRejection.INVALID_SCOPE, description=str(refused))


def _standing_refusal(row: asyncpg.Record, client: ClientContext) -> Refusal | None:
    """The refusal that leaves everything as it was, token unspent: an ended family, or a
    family bound to a device asked without a device id; None when neither applies."""
    if row["revoked_at"] is not None:
        return Refusal(RefreshRejection.REVOKED)
    if row["device_id"] is not None and client.device_id is None:
        return Refusal(
            RefreshRejection.DEVICE_ID_MISSING,
            description="X-Device-Id is required for this session: send the device id "
            "the session was started with.",
        )
    return None


def _spendable(row: asyncpg.Record, scope: str | None) -> str | Refusal:
    """The new tokens' scope when the unused token of ``row`` may be spent, or why not: it
    expired, or ``scope`` is more than the session can give."""
    if row["expires_at"] <= row["now"] or row["absolute_expires_at"] <= row["now"]:
        return Refusal(RefreshRejection.EXPIRED)
    return _granted_scope(scope, row["scope"])


async def _repeat(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    row: asyncpg.Record,
    refresh_token: str,
    client: ClientContext,
    scope: str | None,
) -> TokenResponse | Refusal:
    """The answer to a used token presented again: a reuse ends the family; a benign retry
    (`_benign_retry`) gets the live successor, its scope judged as a fresh refresh's."""
    successor = await _benign_retry(conn, settings, row=row, refresh_token=refresh_token)
    if successor is None:
        return await _end_family(
            conn, row, client, RefreshRejection.REUSED, SecurityEvent.REFRESH_REUSE_DETECTED
        )
    granted = _granted_scope(scope, row["scope"])
    if isinstance(granted, Refusal):
        return granted
    return await _accept_retry(
        conn, settings, keys, row=row, successor=successor, scope=granted, client=client
    )


async def rotate(
    conn: asyncpg.Connection,
    settings: AuthSettings,
    keys: SigningKeys,
    *,
    refresh_token: str,
    client: ClientContext,
    client_id: str | None = None,
    scope: str | None = None,
) -> TokenResponse | Refusal:
    """Exchange a refresh token for a new pair (RFC 6749 §6), one use only; ``scope`` is
    the scope asked for (None: the session's).

    In order: an unknown token, one issued to another client than ``client_id`` (when the
    request named one: RFC 6749 §6, a refresh token is bound to its client), or an ended
    family is refused; a family bound to a device
    (``X-Device-Id`` at login) refuses a request without a device id, and leaves both the
    session and the token as they were (a client that does not send the header must not end
    its user's session); it refuses any other device id and is ended (the token has left its
    device); a used token is a benign retry when it is the live token's immediate
    predecessor used within the grace window (see `_benign_retry`), and otherwise a reuse
    (RFC 9700 §4.14.2) that ends the family; an expired token is refused. Only then is the
    scope judged (so that an unknown token says nothing about it): malformed, or beyond the
    session's grant, is ``INVALID_SCOPE`` and spends nothing; a narrower one applies to the
    new access token while the refresh token keeps the whole grant
    (`bulwark.auth.oauth.scopes.narrowed`).

    Returns the new tokens, or why the token was refused. The caller's transaction must
    commit in both cases: an ended family and its security event are part of the answer, and
    the caller lists ``Refusal.revoked_family`` as revoked once committed.
    """
    token_hash = hash_refresh_token(refresh_token)
    row = (
        await queries.lock_token(conn, token_hash)
        if is_refresh_token_shaped(refresh_token)
        else None
    )
    if row is None or (client_id is not None and row["client_id"] != client_id):
        return Refusal(RefreshRejection.UNKNOWN)
    refused = _standing_refusal(row, client)
    if refused is not None:
        return refused
    family_id: uuid.UUID = row["family_id"]
    if row["device_id"] is not None and client.device_id != row["device_id"]:
        return await _end_family(
            conn,
            row,
            client,
            RefreshRejection.DEVICE_MISMATCH,
            SecurityEvent.REFRESH_DEVICE_MISMATCH,
        )
    if row["used_at"] is not None:
        return await _repeat(
            conn, settings, keys, row=row, refresh_token=refresh_token, client=client, scope=scope
        )
    now: datetime = row["now"]
    granted = _spendable(row, scope)
    if isinstance(granted, Refusal):
        return granted
    successor, successor_hash = new_refresh_token()
    await queries.mark_used(
        conn,
        family_id,
        token_hash,
        successor_hash=successor_hash,
        successor_sealed=successors.seal(refresh_token, successor, family_id),
    )
    await queries.touch_family(conn, family_id, client.ip)
    return await _issue(
        conn,
        settings,
        keys,
        user_id=row["user_id"],
        family_id=family_id,
        client_id=row["client_id"],
        scope=granted,
        now=now,
        absolute_expires_at=row["absolute_expires_at"],
        refresh_token=(successor, successor_hash),
    )


async def revoke_by_refresh_token(
    conn: asyncpg.Connection, refresh_token: str, client_id: str
) -> tuple[uuid.UUID, uuid.UUID] | None:
    """End the family of ``refresh_token`` if it was issued to ``client_id`` (RFC 7009
    §2.1); return ``(user id, family id)``, or None if the token is unknown or another
    client's."""
    if not is_refresh_token_shaped(refresh_token):
        return None
    row = await queries.lock_token(conn, hash_refresh_token(refresh_token))
    if row is None or row["client_id"] != client_id:
        return None
    await queries.revoke_family(conn, row["family_id"], "revoked")
    return row["user_id"], row["family_id"]
